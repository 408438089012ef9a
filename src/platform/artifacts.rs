//! The `ArtifactStore` port over R2: one object per content address (`app::deployments::artifact::key`).

use crate::app::deployments::artifact::key;
use crate::app::ports::{ArtifactStore, StoreError, StoreResult};
use worker::{Bucket, Env};

/// The R2 bucket of deployment artifacts (wrangler.toml `[[r2_buckets]]`).
const ARTIFACTS_BINDING: &str = "ARTIFACTS";

/// The bucket is looked up on each use, so a control plane without it still serves everything else.
pub struct R2Artifacts(Env);

impl R2Artifacts {
    pub fn new(env: &Env) -> Self {
        R2Artifacts(env.clone())
    }

    fn bucket(&self) -> StoreResult<Bucket> {
        self.0.bucket(ARTIFACTS_BINDING).map_err(unreachable)
    }

    /// Removes the artifact at `sha256` (a missing one counts as removed).
    pub async fn remove(&self, sha256: &str) -> StoreResult<()> {
        self.bucket()?
            .delete(key(sha256))
            .await
            .map_err(unreachable)
    }
}

fn unreachable(e: worker::Error) -> StoreError {
    StoreError(format!("artifact store: {e}"))
}

impl ArtifactStore for R2Artifacts {
    async fn artifact(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let Some(object) = self
            .bucket()?
            .get(key(sha256))
            .execute()
            .await
            .map_err(unreachable)?
        else {
            return Ok(None);
        };
        match object.body() {
            Some(body) => body.bytes().await.map(Some).map_err(unreachable),
            None => Ok(None),
        }
    }

    async fn put_artifact_once(
        &self,
        sha256: &str,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<bool> {
        let (bucket, key) = (self.bucket()?, key(sha256));
        if bucket
            .head(key.clone())
            .await
            .map_err(unreachable)?
            .is_some()
        {
            return Ok(false);
        }
        bucket
            .put(key, encode())
            .execute()
            .await
            .map_err(unreachable)?;
        Ok(true)
    }
}
