//! Operations shared by the CLI and the admin API: each does the work, writes the audit
//! event and returns what happened; the CLI prints it, the API answers it as JSON. The
//! audit event's `actor` comes from the caller's context (the CLI's OS user, the admin
//! API's token subject), so an operation is recorded the same way whoever ran it.

use std::net::IpAddr;

use domain::client::Client;
use domain::keyring::KeyRing;
use domain::keys::KeyChange;
use domain::revoked::CutoffKind;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::Runtime;
use crate::cli::{CliError, rfc3339};

#[derive(Debug, Clone, Serialize)]
pub struct UserRevoked {
    pub user_id: String,
    pub username: String,
    pub sessions: u64,
    pub revoked_access_tokens: usize,
    pub disabled: bool,
}

/// The client with `id`, or `NotFound`.
pub async fn find_client(rt: &Runtime, id: &str) -> Result<Client, CliError> {
    rt.stores.clients.get_client(id).await?.ok_or_else(|| CliError::NotFound(format!("no client with id {id:?}")))
}

/// Applies `change` to a stored client, saves it and tells running servers to drop their
/// cached copy. `change` may refuse (the client is left as it was).
pub async fn change_client(
    rt: &Runtime,
    id: &str,
    change: impl FnOnce(&mut Client) -> Result<(), CliError>,
) -> Result<Client, CliError> {
    let mut c = find_client(rt, id).await?;
    change(&mut c)?;
    c.updated_at = rt.clock.now();
    rt.stores.clients.update_client(&c).await?;
    rt.announce_client_changed(&c.id).await;
    Ok(c)
}

/// Disables or re-enables a client; running servers drop it from their caches.
pub async fn set_client_disabled(rt: &Runtime, id: &str, disabled: bool) -> Result<Client, CliError> {
    let c = change_client(rt, id, |c| {
        c.disabled = disabled;
        Ok(())
    })
    .await?;
    let event = if disabled { "admin.client.disabled" } else { "admin.client.enabled" };
    tracing::info!(target: "portcullis::audit", event, client_id = %id, "client status changed");
    Ok(c)
}

/// Every session, refresh and access token of a user (and, with `disable`, their sign-ins).
pub async fn revoke_user(rt: &Runtime, username: &str, disable: bool) -> Result<UserRevoked, CliError> {
    let user = if disable {
        crate::user_cli::set_disabled(rt, username, true).await?
    } else {
        crate::user_cli::find(rt, username).await?
    };
    let out = crate::user_cli::end_everything(rt, &user).await?;
    rt.cut_off(CutoffKind::Subject, &user.id).await?;
    tracing::warn!(
        target: "portcullis::audit", event = "incident.user_revoked", user_id = %user.id,
        sessions = out.sessions, revoked_access_tokens = out.revoked_access_tokens, disabled = disable,
        "every token and session of the user revoked"
    );
    Ok(UserRevoked {
        user_id: user.id,
        username: user.username,
        sessions: out.sessions,
        revoked_access_tokens: out.revoked_access_tokens,
        disabled: disable,
    })
}

/// Disables a client, revokes its grants and every access token issued to it so far;
/// returns how many recorded access tokens went on the blocklist.
pub async fn revoke_client(rt: &Runtime, id: &str) -> Result<usize, CliError> {
    set_client_disabled(rt, id, true).await?;
    let tokens = rt.stores.grants.revoke_client_families(id, rt.clock.now()).await?;
    let count = tokens.len();
    rt.blocklist(tokens).await?;
    rt.cut_off(CutoffKind::Client, id).await?;
    tracing::warn!(
        target: "portcullis::audit", event = "incident.client_revoked", client_id = %id,
        revoked_access_tokens = count, "every token of the client revoked"
    );
    Ok(count)
}

/// Purges a compromised signing key; returns the changes (the purge, then the successor).
pub async fn revoke_key(rt: &Runtime, ring: &KeyRing, kid: &str) -> Result<Vec<KeyChange>, CliError> {
    let changes = ring.revoke_compromised(kid).await?;
    rt.bus.publish(&domain::cluster::ClusterEvent::KeysChanged).await;
    tracing::warn!(
        target: "portcullis::audit", event = "incident.key_revoked", kid = %kid, alert = true,
        "compromised signing key purged; every token it signed is refused"
    );
    Ok(changes)
}

/// Revokes every API key of `owner`; returns their ids.
pub async fn revoke_api_keys(rt: &Runtime, owner: &str) -> Result<Vec<String>, CliError> {
    let now = rt.clock.now();
    let keys = rt.stores.api_keys.list_api_keys().await?;
    let mut revoked = Vec::new();
    for mut k in keys.into_iter().filter(|k| k.owner.as_deref() == Some(owner) && k.revoked_at.is_none()) {
        k.revoked_at = Some(now);
        rt.stores.api_keys.update_api_key(&k).await?;
        rt.announce_api_key_changed(&k.id).await;
        revoked.push(k.id);
    }
    tracing::warn!(
        target: "portcullis::audit", event = "incident.apikeys_revoked", owner, keys = %revoked.join(" "),
        "every API key of the owner revoked"
    );
    Ok(revoked)
}

/// A user's sessions, each named by a prefix of its id's hash (enough to tell them apart,
/// useless to hijack one).
pub async fn sessions(rt: &Runtime, username: &str) -> Result<Vec<Value>, CliError> {
    let user = crate::user_cli::find(rt, username).await?;
    let sessions = rt.stores.sessions.list_user_sessions(&user.id, rt.clock.now()).await?;
    Ok(sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id_hash.get(..12).unwrap_or_default(),
                "created_at": rfc3339(s.created_at),
                "last_seen_at": rfc3339(s.last_seen_at),
                "auth_time": rfc3339(s.auth_time),
                "amr": s.amr,
                "expires_at": rfc3339(s.expires_at),
            })
        })
        .collect())
}

/// Lifts the ban of an address (IPv6: its /64); returns the banned bucket.
pub async fn lift_ban(rt: &Runtime, ip: IpAddr) -> Result<IpAddr, CliError> {
    let ip = domain::netaddr::bucket(ip);
    if !rt.stores.bans.delete_ban(ip).await? {
        return Err(CliError::NotFound(format!("{ip} is not banned")));
    }
    tracing::info!(target: "portcullis::audit", event = "ban.removed", ip = %ip, "ban lifted");
    Ok(ip)
}

/// Announces a successor signing key.
pub async fn rotate_keys(rt: &Runtime, ring: &KeyRing) -> Result<domain::keys::StoredKey, CliError> {
    let key = ring.rotate().await?;
    rt.bus.publish(&domain::cluster::ClusterEvent::KeysChanged).await;
    tracing::info!(target: "portcullis::audit", event = "admin.keys.rotated", kid = %key.kid, "successor key announced");
    Ok(key)
}

/// Retires a key now (it stays published until its tokens expire).
pub async fn retire_key(rt: &Runtime, ring: &KeyRing, kid: &str) -> Result<Vec<KeyChange>, CliError> {
    let changes = ring.retire(kid).await?;
    rt.bus.publish(&domain::cluster::ClusterEvent::KeysChanged).await;
    tracing::info!(target: "portcullis::audit", event = "admin.keys.retired", kid = %kid, "key retired");
    Ok(changes)
}

/// Bans an address now (an incident command); without `length` the ban policy's doubling
/// applies.
pub async fn ban(
    rt: &Runtime,
    ip: IpAddr,
    length: Option<domain::settings::Seconds>,
) -> Result<domain::abuse::Ban, CliError> {
    let policy = &rt.config.rate_limit.bans;
    domain::abuse::new_ban(&*rt.stores.bans, policy, ip, "manual", length, rt.clock.now())
        .await
        .ok_or_else(|| CliError::Usage("the ban could not be stored (see the log)".into()))
}

/// The signing keys, for listings.
pub fn keys_json(keys: &[domain::keys::StoredKey]) -> Value {
    json!(
        keys.iter()
            .map(|k| {
                json!({
                    "kid": k.kid, "alg": k.alg.as_str(), "state": k.state.as_str(),
                    "created_at": k.created_at, "activates_at": k.activates_at,
                    "retired_at": k.retired_at, "purge_after": k.purge_after,
                })
            })
            .collect::<Vec<_>>()
    )
}
