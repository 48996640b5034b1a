//! `portcullis incident …`: one command per incident, each effective at once and on every
//! instance (the store is written first; running servers learn it from the Redis bus at
//! once, or from their 2-second store sync). Every command is an audit event with the
//! operator as `actor`.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use clap::Subcommand;
use domain::revoked::CutoffKind;
use serde_json::json;

use crate::app::Runtime;
use crate::cli::{CliError, JsonFlag, rfc3339};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Revoke everything of a user now: every session, refresh token and access token
    /// issued to them so far; with --disable, also refuse their sign-ins.
    RevokeUser {
        username: String,
        #[arg(long)]
        disable: bool,
    },
    /// Revoke everything of a client now: disable it, revoke its grants, and refuse every
    /// access token issued to it so far (client-credentials tokens included).
    RevokeClient {
        /// Client ids are base64url: one in 64 starts with '-'.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// A signing key is compromised: remove it from the JWKS and from verification now, so
    /// every token it signed is refused everywhere; an active key is replaced at once.
    RevokeKey {
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Revoke every API key of an owner now (running gateways refuse them within
    /// `gateway.api_key_cache_ttl`, 5 s by default).
    RevokeApikeys {
        #[arg(long)]
        owner: String,
    },
    /// List a user's sessions (signed-in browsers).
    Sessions {
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn run(config: Config, command: IncidentCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    match command {
        IncidentCommand::RevokeUser { username, disable } => {
            let user = if disable {
                crate::user_cli::set_disabled(&rt, &username, true).await?
            } else {
                crate::user_cli::find(&rt, &username).await?
            };
            let out = crate::user_cli::end_everything(&rt, &user).await?;
            rt.cut_off(CutoffKind::Subject, &user.id).await?;
            tracing::warn!(
                target: "portcullis::audit", event = "incident.user_revoked", user_id = %user.id,
                sessions = out.sessions, revoked_access_tokens = out.revoked_access_tokens, disabled = disable,
                "every token and session of the user revoked"
            );
            println!(
                "revoked everything of {}: {} session(s), their refresh tokens, and every access token issued up to now{}",
                user.username,
                out.sessions,
                if disable { "; sign-ins refused" } else { "" }
            );
        }
        IncidentCommand::RevokeClient { id } => {
            crate::cli::set_disabled(&rt, &id, true).await?;
            let tokens = rt.stores.grants.revoke_client_families(&id, rt.clock.now()).await?;
            let families = tokens.len();
            rt.blocklist(tokens).await?;
            rt.cut_off(CutoffKind::Client, &id).await?;
            tracing::warn!(
                target: "portcullis::audit", event = "incident.client_revoked", client_id = %id,
                revoked_access_tokens = families, "every token of the client revoked"
            );
            println!("revoked everything of client {id}: its grants and every access token issued up to now");
        }
        IncidentCommand::RevokeKey { kid } => {
            let ring = rt.key_ring().await?;
            let changes = ring.revoke_compromised(&kid).await?;
            rt.bus.publish(&domain::cluster::ClusterEvent::KeysChanged).await;
            tracing::warn!(
                target: "portcullis::audit", event = "incident.key_revoked", kid = %kid, alert = true,
                "compromised signing key purged; every token it signed is refused"
            );
            println!("purged key {kid}: it is gone from the JWKS and every token it signed is refused");
            for change in changes.iter().skip(1) {
                println!("  and: {change:?}");
            }
        }
        IncidentCommand::RevokeApikeys { owner } => revoke_api_keys(&rt, &owner).await?,
        IncidentCommand::Sessions { username, json } => sessions(&rt, &username, json.json).await?,
    }
    Ok(())
}

async fn sessions(rt: &Runtime, username: &str, as_json: bool) -> Result<(), CliError> {
    let user = crate::user_cli::find(rt, username).await?;
    let sessions = rt.stores.sessions.list_user_sessions(&user.id, rt.clock.now()).await?;
    if as_json {
        let list: Vec<_> = sessions
            .iter()
            .map(|s| {
                json!({
                    // A prefix of the id's hash: enough to tell sessions apart, useless to
                    // hijack one.
                    "id": s.id_hash.get(..12).unwrap_or_default(),
                    "created_at": rfc3339(s.created_at),
                    "last_seen_at": rfc3339(s.last_seen_at),
                    "auth_time": rfc3339(s.auth_time),
                    "amr": s.amr,
                    "expires_at": rfc3339(s.expires_at),
                })
            })
            .collect();
        println!("{}", json!(list));
        return Ok(());
    }
    println!("{:<14} {:<21} {:<21} EXPIRES", "SESSION", "SIGNED IN", "LAST SEEN");
    for s in &sessions {
        println!(
            "{:<14} {:<21} {:<21} {}",
            s.id_hash.get(..12).unwrap_or_default(),
            rfc3339(s.created_at),
            rfc3339(s.last_seen_at),
            rfc3339(s.expires_at)
        );
    }
    Ok(())
}

async fn revoke_api_keys(rt: &Runtime, owner: &str) -> Result<(), CliError> {
    let now = rt.clock.now();
    let keys = rt.stores.api_keys.list_api_keys().await?;
    let mut revoked = Vec::new();
    for mut k in keys.into_iter().filter(|k| k.owner.as_deref() == Some(owner) && k.revoked_at.is_none()) {
        k.revoked_at = Some(now);
        rt.stores.api_keys.update_api_key(&k).await?;
        revoked.push(k.id);
    }
    tracing::warn!(
        target: "portcullis::audit", event = "incident.apikeys_revoked", owner, keys = %revoked.join(" "),
        "every API key of the owner revoked"
    );
    println!("revoked {} API key(s) of {owner}: {}", revoked.len(), revoked.join(" "));
    Ok(())
}
