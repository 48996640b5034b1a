//! `portcullis incident …`: one command per incident, each effective at once and on every
//! instance (the store is written first; running servers learn it from the Redis bus at
//! once, or from their 2-second store sync). Every command is an audit event with the
//! operator as `actor`.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use clap::Subcommand;

use crate::app::Runtime;
use crate::cli::{CliError, JsonFlag};
use crate::config::Config;
use crate::ops;

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
    /// Revoke every API key of an owner now (running gateways refuse them at once with
    /// `[redis]`, else within `gateway.api_key_cache_ttl`, 5 s by default).
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
            let out = ops::revoke_user(&rt, &username, disable).await?;
            println!(
                "revoked everything of {}: {} session(s), their refresh tokens, and every access token issued up to now{}",
                out.username,
                out.sessions,
                if disable { "; sign-ins refused" } else { "" }
            );
        }
        IncidentCommand::RevokeClient { id } => {
            ops::revoke_client(&rt, &id).await?;
            println!("revoked everything of client {id}: its grants and every access token issued up to now");
        }
        IncidentCommand::RevokeKey { kid } => {
            let ring = rt.key_ring().await?;
            let changes = ops::revoke_key(&rt, &ring, &kid).await?;
            println!("purged key {kid}: it is gone from the JWKS and every token it signed is refused");
            for change in changes.iter().skip(1) {
                println!("  and: {change:?}");
            }
        }
        IncidentCommand::RevokeApikeys { owner } => {
            let revoked = ops::revoke_api_keys(&rt, &owner).await?;
            println!("revoked {} API key(s) of {owner}: {}", revoked.len(), revoked.join(" "));
        }
        IncidentCommand::Sessions { username, json } => {
            let sessions = ops::sessions(&rt, &username).await?;
            if json.json {
                println!("{}", serde_json::Value::Array(sessions));
                return Ok(());
            }
            println!("{:<14} {:<21} {:<21} EXPIRES", "SESSION", "SIGNED IN", "LAST SEEN");
            for s in &sessions {
                let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                println!(
                    "{:<14} {:<21} {:<21} {}",
                    field("id"),
                    field("created_at"),
                    field("last_seen_at"),
                    field("expires_at")
                );
            }
        }
    }
    Ok(())
}
