//! `portcullis apikey create / list / show / revoke / rotate`: API keys for the gateway's
//! `auth = "api_key"` routes. A key is printed once, at creation or rotation; only its hash
//! is stored.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use clap::Subcommand;
use domain::apikey::{self, ApiKey, NewApiKey};
use domain::scope::Scopes;
use domain::settings::Seconds;
use serde_json::json;

use crate::app::Runtime;
use crate::cli::{CliError, JsonFlag, rfc3339};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; prints it (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Space-separated scopes the key grants.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Roles the key carries (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
        /// Lifetime such as 90d, 12h or 30m; without it the key does not expire.
        #[arg(long)]
        expires: Option<String>,
        /// Who the key belongs to (`incident revoke-apikeys --owner` revokes all of them).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List keys (never the keys themselves).
    List(JsonFlag),
    /// Show one key's metadata.
    Show {
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke a key now (running gateways stop accepting it within api_key_cache_ttl).
    Revoke { id: String },
    /// Issue a successor with the same name, scopes and lifetime; the old key stays valid
    /// for the overlap, then stops. Prints the new key once.
    Rotate {
        id: String,
        /// How long the old key keeps working, such as 24h (0 stops it at once).
        #[arg(long, default_value = "24h")]
        overlap: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn run(config: Config, command: ApiKeyCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    let store = &rt.stores.api_keys;
    let now = rt.clock.now();
    match command {
        ApiKeyCommand::Create { name, scopes, roles, expires, owner, json } => {
            let issued = create_key(&rt, ApiKeySpec { name, scopes, roles, expires, owner }).await?;
            print_key(&issued.stored, &issued.key, json.json);
        }
        ApiKeyCommand::List(flag) => {
            let keys = store.list_api_keys().await?;
            if flag.json {
                println!("{}", json!(keys.iter().map(|k| key_json(k, now)).collect::<Vec<_>>()));
            } else {
                println!("{:<18} {:<20} {:<8} {:<21} {:<21} SCOPES", "ID", "NAME", "STATE", "EXPIRES", "LAST USED");
                for k in &keys {
                    println!(
                        "{:<18} {:<20} {:<8} {:<21} {:<21} {}",
                        k.id,
                        k.name,
                        k.state(now).as_str(),
                        k.expires_at.map_or("never".into(), rfc3339),
                        k.last_used_at.map_or("never".into(), rfc3339),
                        k.scopes
                    );
                }
            }
        }
        ApiKeyCommand::Show { id, json } => {
            let k = find(&rt, &id).await?;
            if json.json {
                println!("{}", key_json(&k, now));
            } else {
                for (label, value) in key_json(&k, now).as_object().into_iter().flatten() {
                    println!("{label:<13} {}", value.as_str().map_or_else(|| value.to_string(), str::to_owned));
                }
            }
        }
        ApiKeyCommand::Revoke { id } => {
            revoke_key(&rt, &id).await?;
            println!("revoked API key {id}");
        }
        ApiKeyCommand::Rotate { id, overlap, json } => {
            let (retiring, successor) = rotate_key(&rt, &id, &overlap).await?;
            print_key(&successor.stored, &successor.key, json.json);
            if !json.json {
                println!(
                    "The old key {} stops working at {}.",
                    retiring.id,
                    retiring.expires_at.map_or("-".into(), rfc3339)
                );
            }
        }
    }
    Ok(())
}

/// `90d`, `12h`, `30m`, `45s`; zero only where `zero_ok`.
fn duration(text: &str, zero_ok: bool) -> Result<i64, CliError> {
    Seconds::parse(text)
        .map(Seconds::as_i64)
        .filter(|s| zero_ok || *s > 0)
        .ok_or_else(|| CliError::Usage(format!("{text:?} is not a duration like 90d, 12h, 30m or 45s")))
}

pub(crate) async fn find(rt: &Runtime, id: &str) -> Result<ApiKey, CliError> {
    rt.stores.api_keys.get_api_key(id).await?.ok_or_else(|| CliError::NotFound(format!("no API key with id {id:?}")))
}

/// An API key to create; also the admin API's `POST /admin/apikeys` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub name: String,
    #[serde(default)]
    pub scopes: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// A lifetime such as 90d; none: the key does not expire.
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
}

/// Creates a key; the caller shows `key` once.
pub(crate) async fn create_key(rt: &Runtime, spec: ApiKeySpec) -> Result<apikey::IssuedApiKey, CliError> {
    let scopes = Scopes::parse(&spec.scopes).map_err(|e| CliError::Usage(e.to_string()))?;
    let lifetime = spec.expires.as_deref().map(|e| duration(e, false)).transpose()?;
    let roles = spec.roles.into_iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
    let issued = NewApiKey { name: spec.name, scopes, roles, owner: spec.owner, lifetime }.issue(rt.clock.now());
    rt.stores.api_keys.insert_api_key(&issued.stored).await?;
    tracing::info!(target: "portcullis::audit", event = "admin.apikey.created", key_id = %issued.stored.id, "API key created");
    Ok(issued)
}

/// Issues a successor of an active key; the old one stays valid for `overlap` (such as
/// 24h). Returns (the old key as cut down, the successor to show once).
pub(crate) async fn rotate_key(
    rt: &Runtime,
    id: &str,
    overlap: &str,
) -> Result<(ApiKey, apikey::IssuedApiKey), CliError> {
    let now = rt.clock.now();
    let old = find(rt, id).await?;
    if old.state(now) != apikey::KeyState::Active {
        return Err(CliError::Usage(format!("API key {id} is {}; only active keys rotate", old.state(now).as_str())));
    }
    let overlap = duration(overlap, true)?;
    let (retiring, successor) = apikey::rotate(&old, overlap, now);
    rt.stores.api_keys.insert_api_key(&successor.stored).await?;
    rt.stores.api_keys.update_api_key(&retiring).await?;
    rt.announce_api_key_changed(&retiring.id).await;
    tracing::info!(
        target: "portcullis::audit", event = "admin.apikey.rotated",
        key_id = %successor.stored.id, rotated_from = %old.id, "API key rotated"
    );
    Ok((retiring, successor))
}

/// Revokes one key now.
pub(crate) async fn revoke_key(rt: &Runtime, id: &str) -> Result<ApiKey, CliError> {
    let now = rt.clock.now();
    let mut k = find(rt, id).await?;
    k.revoked_at = Some(k.revoked_at.map_or(now, |at| at.min(now)));
    rt.stores.api_keys.update_api_key(&k).await?;
    rt.announce_api_key_changed(&k.id).await;
    tracing::info!(target: "portcullis::audit", event = "admin.apikey.revoked", key_id = %k.id, "API key revoked");
    Ok(k)
}

fn print_key(k: &ApiKey, key: &str, as_json: bool) {
    if as_json {
        println!("{}", json!({ "id": k.id, "api_key": key, "expires_at": k.expires_at }));
    } else {
        println!("id:      {}", k.id);
        println!("api_key: {key}");
        println!("expires: {}", k.expires_at.map_or("never".into(), rfc3339));
        println!();
        println!("The key is shown only this once; Portcullis stores only its hash.");
        println!("Send it as `X-API-Key: <key>` or `Authorization: ApiKey <key>`.");
    }
}

pub(crate) fn key_json(k: &ApiKey, now: i64) -> serde_json::Value {
    json!({
        "id": k.id,
        "name": k.name,
        "state": k.state(now).as_str(),
        "scopes": k.scopes.to_string(),
        "roles": k.roles,
        "owner": k.owner,
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.map(rfc3339),
        "revoked_at": k.revoked_at.map(rfc3339),
        "last_used_at": k.last_used_at.map(rfc3339),
        "rotated_from": k.rotated_from,
    })
}
