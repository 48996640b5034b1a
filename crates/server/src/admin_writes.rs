//! The admin API's creating and changing routes (the reading ones and the incident commands
//! are in `admin_api`). Secrets a call creates — a client secret, an API key — are in its
//! response once and nowhere else, as with the CLI.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::admin_api::{Api, ApiError, Reply};
use crate::cli::CliError;

/// A JSON body; a malformed one is a 400 problem, never a 5xx.
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(|e| ApiError::Failed(CliError::Usage(e.body_text())))
    }
}

/// 201 with the created thing.
fn created(value: Value) -> axum::response::Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

pub(crate) async fn create_client(
    State(api): Api,
    Body(args): Body<crate::cli::CreateClient>,
) -> Result<axum::response::Response, ApiError> {
    let (client, secret) = crate::cli::register_client(&api.runtime, args).await?;
    let mut body = crate::cli::client_json(&client);
    if let (Some(secret), Some(obj)) = (secret, body.as_object_mut()) {
        obj.insert("client_secret".into(), Value::from(secret.as_str()));
    }
    Ok(created(body))
}

pub(crate) async fn delete_client(State(api): Api, Path(id): Path<String>) -> Reply {
    crate::cli::delete_client(&api.runtime, &id).await?;
    Ok(Json(json!({ "deleted": id })))
}

pub(crate) async fn rotate_secret(State(api): Api, Path(id): Path<String>) -> Reply {
    let secret = crate::cli::new_client_secret(&api.runtime, &id).await?;
    Ok(Json(json!({ "client_id": id, "client_secret": secret.as_str() })))
}

pub(crate) async fn create_user(
    State(api): Api,
    Body(spec): Body<crate::user_cli::NewUser>,
) -> Result<axum::response::Response, ApiError> {
    let user = crate::user_cli::create_user(&api.runtime, &api.hasher, spec).await?;
    Ok(created(crate::user_cli::user_json(&user)))
}

pub(crate) async fn delete_user(State(api): Api, Path(username): Path<String>) -> Reply {
    let user = crate::user_cli::delete_user(&api.runtime, &username).await?;
    Ok(Json(json!({ "deleted": user.username })))
}

pub(crate) async fn disable_user(State(api): Api, Path(username): Path<String>) -> Reply {
    Ok(Json(crate::user_cli::user_json(&crate::user_cli::disable_user(&api.runtime, &username).await?)))
}

pub(crate) async fn enable_user(State(api): Api, Path(username): Path<String>) -> Reply {
    Ok(Json(crate::user_cli::user_json(&crate::user_cli::set_disabled(&api.runtime, &username, false).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub(crate) async fn change_roles(
    State(api): Api,
    Path(username): Path<String>,
    Body(change): Body<RoleChange>,
) -> Reply {
    let user = crate::user_cli::change_roles(&api.runtime, &username, &change.add, &change.remove).await?;
    Ok(Json(crate::user_cli::user_json(&user)))
}

pub(crate) async fn retire_key(State(api): Api, Path(kid): Path<String>) -> Reply {
    let changes = crate::ops::retire_key(&api.runtime, &api.keys, &kid).await?;
    Ok(Json(json!({ "retired": kid, "changes": changes.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>() })))
}

pub(crate) async fn create_api_key(
    State(api): Api,
    Body(spec): Body<crate::apikey_cli::ApiKeySpec>,
) -> Result<axum::response::Response, ApiError> {
    let issued = crate::apikey_cli::create_key(&api.runtime, spec).await?;
    let now = api.runtime.clock.now();
    let mut body = crate::apikey_cli::key_json(&issued.stored, now);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("api_key".into(), Value::from(issued.key.as_str()));
    }
    Ok(created(body))
}

pub(crate) async fn revoke_api_key(State(api): Api, Path(id): Path<String>) -> Reply {
    let key = crate::apikey_cli::revoke_key(&api.runtime, &id).await?;
    Ok(Json(crate::apikey_cli::key_json(&key, api.runtime.clock.now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBan {
    ip: IpAddr,
    /// How long, such as 30m or 12h; without it the ban policy's doubling applies.
    #[serde(default, rename = "for")]
    length: Option<String>,
}

pub(crate) async fn ban(State(api): Api, Body(b): Body<NewBan>) -> Result<axum::response::Response, ApiError> {
    let length = b
        .length
        .as_deref()
        .map(|l| {
            domain::settings::Seconds::parse(l)
                .filter(|s| s.0 > 0)
                .ok_or_else(|| CliError::Usage(format!("bad length {l:?}")))
        })
        .transpose()?;
    let ban = crate::ops::ban(&api.runtime, b.ip, length).await?;
    Ok(created(crate::ban_cli::ban_json(&ban)))
}

/// Runs `work` (file reads, policy validation) on the blocking pool, in the call's span so
/// that the audit events it logs name the caller as their actor.
async fn on_blocking_pool<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| CliError::Failed(format!("{what} did not finish: {e}")).into())
}

/// Validates the policy directory as it is on disk now against its schema (what a reload
/// would load); the running set is unchanged.
pub(crate) async fn validate_policies(State(api): Api) -> Reply {
    let Some(dir) = api.runtime.config.authorization.policies_dir.clone() else {
        return Err(CliError::Usage("authorization.policies_dir is not set".into()).into());
    };
    let loaded = on_blocking_pool("validation", move || crate::authz::load_dir(&dir)).await?;
    Ok(Json(match loaded {
        Ok(policies) => json!({ "valid": true, "policies": policies.len() }),
        Err(problems) => json!({ "valid": false, "problems": problems }),
    }))
}

/// Reloads the policy directory now, as a change on disk or SIGHUP would, and answers with
/// the outcome: the new set's size, or 422 with every problem of a set that does not
/// validate (the previous set stays in force). This instance only: every instance reads
/// its own directory.
pub(crate) async fn reload_policies(State(api): Api) -> Reply {
    let (Some(dir), Some(engine)) = (api.runtime.config.authorization.policies_dir.clone(), api.authz.engine.clone())
    else {
        return Err(CliError::Usage("no policies are loaded (authorization.policies_dir is not set)".into()).into());
    };
    let cause = crate::authz::ReloadCause::AdminApi;
    let outcome = on_blocking_pool("the reload", move || crate::authz::reload(&dir, &engine, cause)).await?;
    match outcome {
        Ok(count) => Ok(Json(json!({ "reloaded": true, "policies": count }))),
        Err(problems) => Err(ApiError::Invalid {
            detail: "the policies on disk do not validate; the previous set stays in force".into(),
            problems,
        }),
    }
}

/// Runs a table of expected decisions (the `policy test --file` format, as JSON) against
/// the loaded policies.
pub(crate) async fn test_policies(State(api): Api, Body(cases): Body<Value>) -> Reply {
    let Some(engine) = &api.authz.engine else {
        return Err(CliError::Usage("no policies are loaded (authorization.policies_dir is not set)".into()).into());
    };
    let permissions = api.runtime.config.authorization.permissions();
    let (total, failures) = crate::authz::run_cases_json(engine, &permissions, cases)
        .map_err(|e| CliError::Usage(format!("cases: {e}")))?;
    Ok(Json(json!({ "cases": total, "passed": total - failures.len(), "failures": failures })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPassword {
    password: String,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

pub(crate) async fn set_password(
    State(api): Api,
    Path(username): Path<String>,
    Body(body): Body<NewPassword>,
) -> Reply {
    let password = zeroize::Zeroizing::new(body.password);
    let user = crate::user_cli::set_password(&api.runtime, &api.hasher, &username, password).await?;
    Ok(Json(crate::user_cli::user_json(&user)))
}

pub(crate) async fn consents(State(api): Api, Path(username): Path<String>) -> Reply {
    Ok(Json(crate::user_cli::consents_json(&api.runtime, &username).await?))
}

pub(crate) async fn revoke_consent(State(api): Api, Path((username, client_id)): Path<(String, String)>) -> Reply {
    crate::user_cli::revoke_consent(&api.runtime, &username, &client_id).await?;
    Ok(Json(json!({ "revoked": client_id })))
}

pub(crate) async fn api_key(State(api): Api, Path(id): Path<String>) -> Reply {
    let key = crate::apikey_cli::find(&api.runtime, &id).await?;
    Ok(Json(crate::apikey_cli::key_json(&key, api.runtime.clock.now())))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotation {
    /// How long the old key keeps working (default 24h).
    #[serde(default)]
    overlap: Option<String>,
}

pub(crate) async fn rotate_api_key(
    State(api): Api,
    Path(id): Path<String>,
    Body(rotation): Body<Rotation>,
) -> Result<axum::response::Response, ApiError> {
    let overlap = rotation.overlap.unwrap_or_else(|| "24h".to_owned());
    let (retiring, successor) = crate::apikey_cli::rotate_key(&api.runtime, &id, &overlap).await?;
    let now = api.runtime.clock.now();
    let mut body = crate::apikey_cli::key_json(&successor.stored, now);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("api_key".into(), Value::from(successor.key.as_str()));
        obj.insert("old_key_expires_at".into(), json!(retiring.expires_at));
    }
    Ok(created(body))
}

/// `GET /admin/audit?subject=…&event=…&since=…&until=…&limit=…`: as `portcullis audit search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSearch {
    subject: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn search_audit(
    State(api): Api,
    query: Result<Query<AuditSearch>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let Query(q) = query.map_err(|e| CliError::Usage(e.body_text()))?;
    let now = api.runtime.clock.now();
    let at = |s: Option<String>| {
        s.map(|s| crate::audit_cli::parse_time(&s, now).map(|t| t.saturating_mul(1000))).transpose()
    };
    let query = domain::audit::AuditQuery {
        subject: q.subject,
        event_prefix: q.event,
        since_ms: at(q.since)?,
        until_ms: at(q.until)?,
        limit: q.limit.unwrap_or(100).min(10_000),
        ..domain::audit::AuditQuery::default()
    };
    let records = api.runtime.stores.audit.list_audit(&query).await?;
    Ok(Json(json!(records.iter().map(crate::audit_cli::record_json).collect::<Vec<_>>())))
}
