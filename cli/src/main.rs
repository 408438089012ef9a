//! `webhost`: deploy and run agents on webhost.systems from the command line.
//!
//! Exit codes: 0 done; 1 the API refused or failed (its code, message and request id are printed); 2 a usage
//! problem (not logged in, a missing file, bad arguments); 3 a deploy that ended `failed`; 4 the control plane
//! could not be reached.

mod api;
mod bundle;
mod config;
mod progress;

use api::{envelope_failure, read_json, Client, Failure};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "webhost",
    version,
    about = "Deploy and run agents on webhost.systems"
)]
struct Cli {
    /// Print JSON (for scripts) instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store the control plane's address and a token or API key (read from stdin when --token is not given).
    Login {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        token: Option<String>,
    },
    /// List, create, disable or enable agents.
    Agents {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Deploy the bundle in DIR (agent.config.json and its modules), or with --image a container image to
    /// AgentCore, and follow it until it is active or failed.
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The agent (id or name); default: the manifest's `name`, created when it does not exist.
        #[arg(long)]
        agent: Option<String>,
        /// Deploy this container image (an Amazon ECR URI) to AgentCore instead of a folder (needs --agent).
        #[arg(long)]
        image: Option<String>,
        /// With --image: the IAM role it runs as, one the platform allows (default: the platform's).
        #[arg(long, requires = "image")]
        role: Option<String>,
    },
    /// An agent's deployments, newest first.
    Deployments {
        #[command(subcommand)]
        action: DeploymentAction,
    },
    /// Make an earlier deployment the active one (its agent is found when --agent is not given).
    Rollback {
        deployment: String,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Set (value from stdin, never echoed), list or delete an agent's secrets.
    Secrets {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Invoke an agent with TEXT; --stream prints the answer as it arrives.
    Invoke {
        agent: String,
        text: String,
        #[arg(long)]
        stream: bool,
    },
    /// This period's usage against the plan.
    Usage,
    /// Create, list or revoke API keys.
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum AgentAction {
    List,
    Create { name: String },
    Disable { agent: String },
    Enable { agent: String },
}

#[derive(Subcommand)]
enum DeploymentAction {
    List { agent: String },
}

#[derive(Subcommand)]
enum SecretAction {
    Set { agent: String, name: String },
    List { agent: String },
    Delete { agent: String, name: String },
}

#[derive(Subcommand)]
enum KeyAction {
    Create { name: String },
    List,
    Revoke { key: String },
}

fn main() {
    let cli = Cli::parse();
    let json_output = cli.json;
    if let Err(failure) = run(cli) {
        if json_output {
            let out = failure.to_json();
            println!("{out}");
        } else {
            eprintln!("webhost: {failure}");
        }
        std::process::exit(failure.exit_code());
    }
}

fn client() -> Result<Client, Failure> {
    let config = config::load();
    match (config.endpoint, config.token) {
        (Some(endpoint), Some(token)) => Ok(Client::new(&endpoint, &token)),
        _ => Err(Failure::Usage(
            "not logged in: run `webhost login --endpoint <url>` first".into(),
        )),
    }
}

fn print(json_output: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json_output {
        println!("{value}");
    } else {
        println!("{}", human(value));
    }
}

/// An agent's id from its id or name.
fn agent_id(client: &Client, agent: &str) -> Result<String, Failure> {
    if agent.starts_with("agt_") {
        return Ok(agent.to_owned());
    }
    find_agent(client, agent)?.ok_or_else(|| Failure::Usage(format!("no agent named {agent}")))
}

/// The agent a deployment belongs to, looked for among the caller's agents.
fn agent_of_deployment(client: &Client, deployment: &str) -> Result<String, Failure> {
    let agents = client.json("GET", "/v1/agents?limit=100", None)?;
    for agent in agents["agents"].as_array().into_iter().flatten() {
        let id = agent["id"].as_str().unwrap_or_default();
        let path = format!("/v1/agents/{id}/deployments/{deployment}");
        if client.json("GET", &path, None).is_ok() {
            return Ok(id.to_owned());
        }
    }
    Err(Failure::Usage(format!(
        "no agent of yours has deployment {deployment} (give --agent)"
    )))
}

fn find_agent(client: &Client, name: &str) -> Result<Option<String>, Failure> {
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/agents?limit=100&cursor={c}"),
            None => "/v1/agents?limit=100".into(),
        };
        let page = client.json("GET", &path, None)?;
        if let Some(found) = page["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == name)
        {
            return Ok(found["id"].as_str().map(str::to_owned));
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(None),
        }
    }
}

/// A secret from stdin: typed at a terminal after `prompt`, never echoed; piped, read whole (`one_line`: the
/// first line), without its final newline.
fn read_secret(prompt: &str, one_line: bool) -> Result<String, Failure> {
    let failed = |e: std::io::Error| Failure::Usage(e.to_string());
    if std::io::stdin().is_terminal() {
        let term = console::Term::stderr();
        term.write_str(prompt).map_err(failed)?;
        return term.read_secure_line().map_err(failed);
    }
    let mut value = String::new();
    if one_line {
        std::io::stdin().read_line(&mut value).map_err(failed)?;
    } else {
        std::io::stdin()
            .read_to_string(&mut value)
            .map_err(failed)?;
    }
    Ok(value.strip_suffix('\n').unwrap_or(&value).to_owned())
}

fn run(cli: Cli) -> Result<(), Failure> {
    let j = cli.json;
    match cli.command {
        Command::Login { endpoint, token } => {
            let token = match token {
                Some(t) => t,
                None => read_secret("Token or API key: ", true)?.trim().to_owned(),
            };
            if token.is_empty() {
                return Err(Failure::Usage("an empty token".into()));
            }
            // Checked before it is stored: a token the control plane refuses is not kept.
            let me = Client::new(&endpoint, &token).json("GET", "/v1/me", None)?;
            let path = config::save(&config::Config {
                endpoint: Some(endpoint),
                token: Some(token),
            })
            .map_err(|e| Failure::Usage(format!("could not save the login: {e}")))?;
            print(
                j,
                &json!({ "user": me, "config": path.display().to_string() }),
                |_| {
                    format!(
                        "Logged in as {} ({} plan); saved to {}",
                        me["id"].as_str().unwrap_or("?"),
                        me["tier"].as_str().unwrap_or("?"),
                        path.display()
                    )
                },
            );
        }
        Command::Agents { action } => {
            let client = client()?;
            let value = match action {
                AgentAction::List => client.json("GET", "/v1/agents?limit=100", None)?,
                AgentAction::Create { name } => {
                    client.json("POST", "/v1/agents", Some(json!({ "name": name })))?
                }
                AgentAction::Disable { agent } => client.json(
                    "POST",
                    &format!("/v1/agents/{}/disable", agent_id(&client, &agent)?),
                    None,
                )?,
                AgentAction::Enable { agent } => client.json(
                    "POST",
                    &format!("/v1/agents/{}/enable", agent_id(&client, &agent)?),
                    None,
                )?,
            };
            print(j, &value, |v| match v.get("agents") {
                Some(list) => list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        format!(
                            "{}  {:<30} {}",
                            a["id"].as_str().unwrap_or(""),
                            a["name"].as_str().unwrap_or(""),
                            a["status"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                None => format!(
                    "{} {} ({})",
                    v["id"].as_str().unwrap_or(""),
                    v["name"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or("")
                ),
            });
        }
        Command::Deploy {
            dir,
            agent,
            image: Some(image),
            role,
        } => {
            if dir.as_os_str() != "." {
                return Err(Failure::Usage(
                    "deploy --image takes no folder: the image is the agent".into(),
                ));
            }
            deploy_image(j, agent, &image, role)?
        }
        Command::Deploy { dir, agent, .. } => deploy(j, &dir, agent)?,
        Command::Deployments {
            action: DeploymentAction::List { agent },
        } => {
            let client = client()?;
            let value = client.json(
                "GET",
                &format!("/v1/agents/{}/deployments", agent_id(&client, &agent)?),
                None,
            )?;
            print(j, &value, |v| {
                v["deployments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "v{:<4} {}  {:<9} {}",
                            d["version"],
                            d["id"].as_str().unwrap_or(""),
                            d["status"].as_str().unwrap_or(""),
                            d["codeSha256"]
                                .as_str()
                                .map(|s| &s[..12.min(s.len())])
                                .unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Rollback { deployment, agent } => {
            let client = client()?;
            let id = match agent {
                Some(agent) => agent_id(&client, &agent)?,
                None => agent_of_deployment(&client, &deployment)?,
            };
            let value = client.json(
                "POST",
                &format!("/v1/agents/{id}/deployments/{deployment}/activate"),
                None,
            )?;
            print(j, &value, |v| {
                format!(
                    "{} is active (v{})",
                    v["id"].as_str().unwrap_or(""),
                    v["version"]
                )
            });
        }
        Command::Secrets { action } => {
            let client = client()?;
            let value = match action {
                SecretAction::Set { agent, name } => {
                    // The value from stdin, so it never appears in the shell's history or the process list.
                    let value = read_secret(&format!("Value of {name}: "), false)?;
                    client.json(
                        "PUT",
                        &format!("/v1/agents/{}/secrets/{name}", agent_id(&client, &agent)?),
                        Some(json!({ "value": value })),
                    )?
                }
                SecretAction::List { agent } => client.json(
                    "GET",
                    &format!("/v1/agents/{}/secrets", agent_id(&client, &agent)?),
                    None,
                )?,
                SecretAction::Delete { agent, name } => {
                    client.json(
                        "DELETE",
                        &format!("/v1/agents/{}/secrets/{name}", agent_id(&client, &agent)?),
                        None,
                    )?;
                    json!({ "deleted": name })
                }
            };
            print(j, &value, |v| match v.get("secrets") {
                Some(list) => list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s["name"].as_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
                    .join("\n"),
                None => match v.get("deleted") {
                    Some(name) => format!("deleted {}", name.as_str().unwrap_or("")),
                    None => format!("set {}", v["name"].as_str().unwrap_or("")),
                },
            });
        }
        Command::Invoke {
            agent,
            text,
            stream,
        } => invoke(j, &agent, &text, stream)?,
        Command::Usage => {
            let value = client()?.json("GET", "/v1/usage/current", None)?;
            print(j, &value, |v| {
                let e = &v["entitlements"];
                format!(
                    "{} ({} plan)\nrequests  {} of {}\ntokens    {} of {}\ncompute   {} ms of {} ms",
                    v["periodKey"].as_str().unwrap_or(""),
                    v["tier"].as_str().unwrap_or(""),
                    v["requestsReserved"],
                    e["requestsPerPeriod"],
                    v["totals"]["tokens"],
                    e["tokensPerPeriod"],
                    v["totals"]["computeMs"].as_i64().unwrap_or(0).max(v["totals"]["gatewayMs"].as_i64().unwrap_or(0)),
                    e["computeMsPerPeriod"]
                )
            });
        }
        Command::Keys { action } => {
            let client = client()?;
            let value = match action {
                KeyAction::Create { name } => {
                    client.json("POST", "/v1/api-keys", Some(json!({ "name": name })))?
                }
                KeyAction::List => client.json("GET", "/v1/api-keys", None)?,
                KeyAction::Revoke { key } => {
                    client.json("DELETE", &format!("/v1/api-keys/{key}"), None)?;
                    json!({ "revoked": key })
                }
            };
            print(j, &value, |v| {
                if let Some(key) = v.get("key") {
                    format!("{}\n(shown once: store it now)", key.as_str().unwrap_or(""))
                } else if let Some(list) = v.get("apiKeys") {
                    list.as_array()
                        .into_iter()
                        .flatten()
                        .map(|k| {
                            format!(
                                "{}  {}…  {}{}",
                                k["id"].as_str().unwrap_or(""),
                                k["prefix"].as_str().unwrap_or(""),
                                k["name"].as_str().unwrap_or(""),
                                if k["revokedAt"].is_null() {
                                    ""
                                } else {
                                    "  (revoked)"
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    format!("revoked {}", v["revoked"].as_str().unwrap_or(""))
                }
            });
        }
    }
    Ok(())
}

fn deploy(j: bool, dir: &std::path::Path, agent: Option<String>) -> Result<(), Failure> {
    let client = client()?;
    let folder = bundle::read(dir)?;
    let manifest: Value = serde_json::from_slice(&folder.manifest)
        .map_err(|e| Failure::Usage(format!("agent.config.json is not JSON: {e}")))?;
    let id = agent_or_new(
        &client,
        agent.or_else(|| manifest["name"].as_str().map(str::to_owned)),
        "name the agent: --agent, or `name` in agent.config.json",
    )?;
    if !j {
        eprintln!(
            "Uploading {} modules ({} KB) to {id}…",
            folder.modules.len(),
            folder.bytes().div_ceil(1024)
        );
    }
    let (content_type, body) = bundle::multipart(&folder);
    let upload = progress::upload(j);
    let response = client.send_observed(
        "POST",
        &format!("/v1/agents/{id}/deploy"),
        Some((&content_type, body)),
        &[],
        &upload,
    );
    upload.finish_and_clear();
    let deployment = read_json(response?)?;
    follow(j, &client, &id, deployment)
}

/// The agent named (an id, or a name: created when it does not exist).
fn agent_or_new(client: &Client, agent: Option<String>, missing: &str) -> Result<String, Failure> {
    Ok(match agent {
        Some(a) if a.starts_with("agt_") => a,
        Some(name) => match find_agent(client, &name)? {
            Some(id) => id,
            None => client.json("POST", "/v1/agents", Some(json!({ "name": name })))?["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        None => return Err(Failure::Usage(missing.into())),
    })
}

/// `deploy --image`: a container image on AgentCore (the plan must include it).
fn deploy_image(
    j: bool,
    agent: Option<String>,
    image: &str,
    role: Option<String>,
) -> Result<(), Failure> {
    let client = client()?;
    // Refused before anything is created when the plan lacks AgentCore (no empty agent left behind).
    let me = client.json("GET", "/v1/me", None)?;
    let providers = me["entitlements"]["runtimeProviders"].as_array();
    if !providers.is_some_and(|p| p.iter().any(|v| v == "agentcore")) {
        return Err(Failure::Api {
            status: 403,
            code: "not_entitled".into(),
            message: "Your plan does not include the agentcore runtime (Pro and Enterprise do)."
                .into(),
            request_id: None,
        });
    }
    let id = agent_or_new(&client, agent, "name the agent with --agent")?;
    if !j {
        eprintln!("Deploying {image} to {id} on AgentCore…");
    }
    let mut body = json!({ "runtimeProvider": "agentcore", "containerUri": image });
    if let Some(role) = role {
        body["executionRoleArn"] = json!(role);
    }
    let deployment = client.json("POST", &format!("/v1/agents/{id}/deploy"), Some(body))?;
    follow(j, &client, &id, deployment)
}

/// Follows a deployment until it leaves `deploying`, printing how it ended.
fn follow(j: bool, client: &Client, id: &str, deployment: Value) -> Result<(), Failure> {
    let dep = deployment["id"].as_str().unwrap_or_default().to_owned();
    if !j {
        eprintln!(
            "Deployment {dep} (v{}) is deploying…",
            deployment["version"]
        );
    }
    // Followed until it leaves `deploying` (the control plane fails a stuck one within minutes; an AgentCore
    // version may take minutes to start, and the control plane's cron job follows it every 5).
    let limit = if deployment["runtimeProvider"] == "agentcore" {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(300)
    };
    let started = Instant::now();
    let waiting = progress::waiting(j, &format!("v{} deploying", deployment["version"]));
    // Quick at first (a Cloudflare deploy is live in seconds), then every few seconds for a slow one.
    let mut pause = Duration::from_millis(500);
    let done = loop {
        let current = client.json("GET", &format!("/v1/agents/{id}/deployments/{dep}"), None);
        let current = match current {
            Ok(current) => current,
            Err(e) => {
                waiting.finish_and_clear();
                return Err(e);
            }
        };
        if current["status"] != "deploying" || started.elapsed() > limit {
            waiting.finish_and_clear();
            break current;
        }
        if let Some(retries) = current["retries"].as_u64().filter(|n| *n > 0) {
            waiting.set_message(format!(
                "v{} deploying (the provider is busy: {retries} retries)",
                deployment["version"]
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(Duration::from_secs(5));
    };
    match done["status"].as_str() {
        Some("active") => {
            print(j, &done, |d| {
                format!(
                    "Deployed: {} v{} is active ({})",
                    d["id"].as_str().unwrap_or(""),
                    d["version"],
                    d["codeSha256"].as_str().unwrap_or("")
                )
            });
            Ok(())
        }
        status => {
            let e = &done["error"];
            if j {
                println!("{done}");
            }
            Err(Failure::DeployFailed(format!(
                "deployment {dep} is {}: failed at {} ({}): {}",
                status.unwrap_or("unknown"),
                e["step"].as_str().unwrap_or("?"),
                e["endpoint"].as_str().unwrap_or("-"),
                e["message"].as_str().unwrap_or("no message")
            )))
        }
    }
}

fn invoke(j: bool, agent: &str, text: &str, stream: bool) -> Result<(), Failure> {
    let client = client()?;
    let id = agent_id(&client, agent)?;
    let body = json!({ "protocol": "invoke/v1", "input": { "messages": [{ "role": "user", "content": text }] } });
    if !stream {
        let answer = client.json("POST", &format!("/v1/invoke/{id}"), Some(body))?;
        print(j, &answer, |a| {
            a["output"]["text"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| a["output"].to_string())
        });
        return Ok(());
    }
    let mut response = client.send(
        "POST",
        &format!("/v1/invoke/{id}/stream"),
        Some(("application/json", body.to_string().into_bytes())),
        &[("Accept", "text/event-stream")],
    )?;
    if !(200..300).contains(&response.status) {
        return Err(read_json(response)
            .err()
            .unwrap_or(Failure::Network("unexpected answer".into())));
    }
    // Server-sent events, printed as they arrive: each delta's text (or, with --json, each event as a line).
    let reader = BufReader::new(response.body.as_reader());
    let (mut event, mut data) = (String::from("message"), String::new());
    let stdout = std::io::stdout();
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::Network(format!("the stream broke off: {e}")))?;
        if line.is_empty() {
            let payload: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let mut out = stdout.lock();
            if j {
                let _ = writeln!(out, "{}", json!({ "event": event, "data": payload }));
            } else if event == "delta" {
                let _ = write!(out, "{}", payload["text"].as_str().unwrap_or(""));
            } else if event == "done" {
                let _ = writeln!(out);
            } else if event == "error" {
                return Err(envelope_failure(
                    200,
                    &json!({ "error": payload }),
                    &response.headers,
                ));
            }
            let _ = out.flush();
            event = "message".into();
            data.clear();
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = rest.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("data:") {
            data.push_str(rest.trim_start());
        }
    }
    Ok(())
}
