//! Rolling back to a deployment whose script the clean-up job removed: its script is uploaded again from its
//! artifact, under its own script name and with the platform secrets it was deployed with (so the gateway's
//! credential and its telemetry signatures still hold), before the pointer moves to it.

use super::*;
use crate::app::ports::RemovedScript;
use crate::domain::bundle::BundleLimits;

fn cannot_restore(deployment: &Deployment, why: &str) -> ApiError {
    ApiError::new(ErrorCode::DeploymentNotActivatable, why.to_string())
        .with_details(serde_json::json!({ "status": deployment.status }))
}

/// What uploading a script again uses: where the code is kept, the provider and its settings, and the owner's
/// plan (a restore counts against the deploy limits, and its code against `bundleBytes`, like a deploy).
pub struct Uploader<'a, A, P, W> {
    pub artifacts: &'a A,
    pub provider: &'a P,
    pub sleeper: &'a W,
    pub config: &'a DeployConfig,
    pub limits: DeployLimits,
    pub bundle_limits: BundleLimits,
}

/// Uploads `deployment`'s script again from its artifact and waits until it answers. The agent's secrets are
/// bound as they are now (what a deploy today would bind); its code, settings and platform secrets are the
/// deployment's own. A failure changes nothing the caller can see: the pointer has not moved.
pub(super) async fn upload_again<S: DeploymentStore>(
    store: &S,
    uploader: &Uploader<'_, impl ArtifactStore, impl ProviderApi, impl Sleeper>,
    clock: &impl Clock,
    deployment: &Deployment,
    removed: &RemovedScript,
) -> Result<(), ApiError> {
    let Uploader {
        artifacts,
        provider,
        sleeper,
        config,
        limits,
        bundle_limits,
    } = uploader;
    if deployment.runtime_provider == super::agentcore::RUNTIME_PROVIDER {
        return Err(cannot_restore(
            deployment,
            "This AgentCore deployment's runtime version has been cleaned up; deploy its image again instead.",
        ));
    }
    // Uploaded where the deployment's row says it runs, or the gateway could not reach it.
    if deployment.deploy_target != config.target_name
        || deployment.provider_ref.as_deref()
            != Some(config.provider_ref(&deployment.script_name).as_str())
    {
        return Err(cannot_restore(
            deployment,
            "This deployment's script has been cleaned up and the platform now deploys elsewhere; deploy again \
             instead.",
        ));
    }
    let stored = artifacts
        .artifact(&deployment.code_sha256)
        .await
        .map_err(|e| ApiError::unavailable("The artifact store is not reachable.", e.0))?
        .ok_or_else(|| {
            cannot_restore(
                deployment,
                "This deployment's script has been cleaned up and its code was not kept as an artifact; \
                 deploy again instead.",
            )
        })?;
    let spec = artifact::decode(deployment, &stored).map_err(ApiError::internal)?;
    bundle_limits.check_total(
        spec.module_code.len()
            + spec
                .extra_modules
                .iter()
                .map(|m| m.bytes.len())
                .sum::<usize>(),
    )?;
    let aad = deployment.id.as_str().as_bytes();
    let telemetry_key = config
        .encryption_key
        .open(&removed.telemetry_secret_sealed, aad)
        .map_err(|e| ApiError::internal(format!("telemetry secret of {}: {e}", deployment.id)))?;
    let Some(gateway_sealed) = &removed.gateway_secret_sealed else {
        return Err(cannot_restore(
            deployment,
            "This deployment predates the gateway guard and its script has been cleaned up; deploy again instead.",
        ));
    };
    let gateway_secret = config
        .encryption_key
        .open(
            gateway_sealed,
            gateway_credential::sealing_aad(deployment.id.as_str()).as_bytes(),
        )
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::internal(format!("gateway secret of {}", deployment.id)))?;
    let telemetry_secret = URL_SAFE_NO_PAD.encode(telemetry_key);
    // One restore of a deployment at a time, within the plan's deploy limits.
    let now = clock.now_ms();
    if !store
        .claim_restore(&deployment.user_id, &deployment.id, now, limits)
        .await?
    {
        let counts = store.deploy_counts(&deployment.user_id, now).await?;
        if limits::any_reached(limits, &counts) {
            return Err(deploy_limit_error(limits, &counts, now));
        }
        let mut busy = ApiError::new(
            ErrorCode::RestoreInProgress,
            "This deployment's script is being uploaded again by another request; try again in a few seconds.",
        )
        .with_headers(vec![("Retry-After", "5".to_owned())]);
        // A conflict that resolves itself: once the other restore ends, the same request succeeds.
        busy.retryable_override = Some(true);
        return Err(busy);
    }
    let uploaded = deploy_steps(
        store,
        *provider,
        *sleeper,
        clock,
        config,
        deployment,
        &spec,
        &telemetry_secret,
        &gateway_secret,
    )
    .await;
    if let Err(error) = uploaded {
        // Whatever part of it was uploaded goes again while this restore holds the deployment; if that fails
        // too, the row says the script exists, so the clean-up job deletes it.
        let deleted = delete_script(
            store,
            *provider,
            config,
            &deployment.id,
            &deployment.script_name,
            clock.now_ms(),
        )
        .await
        .is_ok();
        store.end_restore(&deployment.id, !deleted).await?;
        // A busy or failing provider may answer next time; a refused upload will refuse again.
        let transient = matches!(
            error.kind.as_str(),
            "rate_limited" | "upstream" | "network" | "not_live"
        );
        let mut refused = ApiError::new(
            ErrorCode::RestoreFailed,
            format!(
                "This deployment's script had been cleaned up and could not be uploaded again from its \
                 artifact ({}: {}); nothing changed.",
                error.step, error.message
            ),
        )
        .with_details(serde_json::json!({
            "step": error.step,
            "kind": error.kind,
            "message": error.message,
            "endpoint": error.endpoint,
        }));
        refused.retryable_override = Some(transient);
        return Err(refused);
    }
    Ok(())
}
