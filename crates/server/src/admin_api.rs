//! The admin API: JSON on the admin listener, the CLI's operations (`crate::ops`) for
//! clients, users, keys, API keys, bans, sessions and incidents, described by an OpenAPI
//! 3.1 document at `/admin/openapi.json`.
//!
//! Every call needs `Authorization: Bearer <access token issued by this Portcullis>` whose
//! `aud` holds `[admin] audience` and whose scope holds `[admin] scope` (everything) or
//! `[admin] read_scope` (GET only) — or, with `[admin] policies = true`, that the Cedar
//! policies allow the call ([`admin_query`]). Tokens are verified like introspection does (signature,
//! expiry, revocation and incident cut-offs). RFC 6750 §3 errors: 401 `invalid_token`,
//! 403 `insufficient_scope`; other errors are `application/problem+json` (RFC 9457).
//! Every call runs in a span carrying `actor = token:<sub>`, so the audit events of the
//! operations it performs name who did it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts as _, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use domain::keyring::KeyRing;
use domain::policy::Query;
use domain::service::TokenService;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::admin_writes::Body;
use crate::app::Runtime;
use crate::cli::CliError;
use crate::ops;

#[derive(Debug, Clone)]
pub struct AdminApi {
    pub runtime: Arc<Runtime>,
    pub keys: Arc<KeyRing>,
    pub tokens: TokenService,
    pub hasher: domain::password::PasswordHasher,
    /// The gateway's role permissions and policy engine (when `authorization.policies_dir`
    /// is set), for `[admin] policies` and the policy endpoints.
    pub authz: gateway::authz::Authz,
}

pub(crate) type Api = State<Arc<AdminApi>>;

/// The routes, method and path, as the OpenAPI document lists them (a test checks both
/// agree).
pub const ROUTES: [(&str, &str); 38] = [
    ("GET", "/admin/clients"),
    ("POST", "/admin/clients"),
    ("GET", "/admin/clients/{id}"),
    ("DELETE", "/admin/clients/{id}"),
    ("POST", "/admin/clients/{id}/disable"),
    ("POST", "/admin/clients/{id}/enable"),
    ("POST", "/admin/clients/{id}/rotate-secret"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/{username}"),
    ("DELETE", "/admin/users/{username}"),
    ("POST", "/admin/users/{username}/disable"),
    ("POST", "/admin/users/{username}/enable"),
    ("PUT", "/admin/users/{username}/roles"),
    ("GET", "/admin/users/{username}/sessions"),
    ("PUT", "/admin/users/{username}/password"),
    ("GET", "/admin/users/{username}/consents"),
    ("DELETE", "/admin/users/{username}/consents/{client_id}"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("POST", "/admin/keys/{kid}/retire"),
    ("GET", "/admin/apikeys"),
    ("POST", "/admin/apikeys"),
    ("GET", "/admin/apikeys/{id}"),
    ("POST", "/admin/apikeys/{id}/revoke"),
    ("POST", "/admin/apikeys/{id}/rotate"),
    ("GET", "/admin/bans"),
    ("POST", "/admin/bans"),
    ("DELETE", "/admin/bans/{ip}"),
    ("POST", "/admin/policies/validate"),
    ("POST", "/admin/policies/test"),
    ("POST", "/admin/policies/reload"),
    ("POST", "/admin/incidents/revoke-user"),
    ("POST", "/admin/incidents/revoke-client"),
    ("POST", "/admin/incidents/revoke-key"),
    ("POST", "/admin/incidents/revoke-apikeys"),
    ("GET", "/admin/audit/head"),
    ("GET", "/admin/audit"),
];

pub fn router(api: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/admin/clients", get(clients).post(crate::admin_writes::create_client))
        .route("/admin/clients/{id}", get(client).delete(crate::admin_writes::delete_client))
        .route("/admin/clients/{id}/disable", post(disable_client))
        .route("/admin/clients/{id}/enable", post(enable_client))
        .route("/admin/clients/{id}/rotate-secret", post(crate::admin_writes::rotate_secret))
        .route("/admin/users", get(users).post(crate::admin_writes::create_user))
        .route("/admin/users/{username}", get(user).delete(crate::admin_writes::delete_user))
        .route("/admin/users/{username}/disable", post(crate::admin_writes::disable_user))
        .route("/admin/users/{username}/enable", post(crate::admin_writes::enable_user))
        .route("/admin/users/{username}/roles", put(crate::admin_writes::change_roles))
        .route("/admin/users/{username}/sessions", get(sessions))
        .route("/admin/users/{username}/password", put(crate::admin_writes::set_password))
        .route("/admin/users/{username}/consents", get(crate::admin_writes::consents))
        .route("/admin/users/{username}/consents/{client_id}", delete(crate::admin_writes::revoke_consent))
        .route("/admin/keys", get(keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/keys/{kid}/retire", post(crate::admin_writes::retire_key))
        .route("/admin/apikeys", get(api_keys).post(crate::admin_writes::create_api_key))
        .route("/admin/apikeys/{id}", get(crate::admin_writes::api_key))
        .route("/admin/apikeys/{id}/revoke", post(crate::admin_writes::revoke_api_key))
        .route("/admin/apikeys/{id}/rotate", post(crate::admin_writes::rotate_api_key))
        .route("/admin/bans", get(bans).post(crate::admin_writes::ban))
        .route("/admin/bans/{ip}", delete(lift_ban))
        .route("/admin/policies/validate", post(crate::admin_writes::validate_policies))
        .route("/admin/policies/test", post(crate::admin_writes::test_policies))
        .route("/admin/policies/reload", post(crate::admin_writes::reload_policies))
        .route("/admin/incidents/revoke-user", post(revoke_user))
        .route("/admin/incidents/revoke-client", post(revoke_client))
        .route("/admin/incidents/revoke-key", post(revoke_key))
        .route("/admin/incidents/revoke-apikeys", post(revoke_api_keys))
        .route("/admin/audit/head", get(audit_head))
        .route("/admin/audit", get(crate::admin_writes::search_audit))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), authenticate))
        .route("/admin/openapi.json", get(|| async { Json(crate::admin_openapi::document()) }))
        .with_state(api)
}

/// An error of the admin API.
#[derive(Debug)]
pub enum ApiError {
    /// RFC 6750 §3: no token, or one that does not verify.
    InvalidToken,
    /// RFC 6750 §3: a valid token without the scope.
    InsufficientScope,
    /// `[admin] policies`: the Cedar policies denied the call.
    PolicyDenied,
    /// 422: the request was understood but what it acts on does not validate; `problems`
    /// lists every reason.
    Invalid {
        detail: String,
        problems: Vec<String>,
    },
    Failed(CliError),
}

impl From<CliError> for ApiError {
    fn from(e: CliError) -> Self {
        Self::Failed(e)
    }
}

impl From<domain::StoreError> for ApiError {
    fn from(e: domain::StoreError) -> Self {
        Self::Failed(CliError::Store(e))
    }
}

fn challenge(error: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer realm=\"portcullis-admin\", error=\"{error}\""))
        .unwrap_or(HeaderValue::from_static("Bearer"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use domain::StoreError;
        use domain::keyring::KeyRingError;
        let (status, detail) = match self {
            Self::InvalidToken => {
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge("invalid_token"))])
                    .into_response();
            }
            Self::InsufficientScope => {
                return (StatusCode::FORBIDDEN, [(header::WWW_AUTHENTICATE, challenge("insufficient_scope"))])
                    .into_response();
            }
            Self::PolicyDenied => {
                let body = json!({
                    "type": "about:blank", "title": "Forbidden", "status": 403,
                    "detail": "the authorization policies do not allow this call", "reason": "policy_denied",
                });
                return (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string())
                    .into_response();
            }
            Self::Invalid { detail, problems } => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                let body = json!({
                    "type": "about:blank", "title": "Unprocessable Content", "status": status.as_u16(),
                    "detail": detail, "problems": problems,
                });
                return (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string())
                    .into_response();
            }
            Self::Failed(CliError::NotFound(m)) => (StatusCode::NOT_FOUND, m),
            Self::Failed(e) => {
                let status = match &e {
                    CliError::Usage(_) => StatusCode::BAD_REQUEST,
                    CliError::Store(StoreError::Conflict(_))
                    | CliError::Keys(
                        KeyRingError::Busy | KeyRingError::AlreadyAnnounced(_) | KeyRingError::NotRetirable(..),
                    ) => StatusCode::CONFLICT,
                    CliError::Keys(KeyRingError::UnknownKey(_)) | CliError::Store(StoreError::NotFound) => {
                        StatusCode::NOT_FOUND
                    }
                    CliError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(cause = %e, "admin operation failed");
                }
                (status, e.to_string())
            }
        };
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

/// Verifies the bearer token and its audience and scope, then runs the call in a span that
/// names the actor.
async fn authenticate(State(api): Api, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = token else { return ApiError::InvalidToken.into_response() };
    let claims = match api.tokens.verify(&token).await {
        Ok(Ok(claims)) => claims,
        Ok(Err(reason)) => {
            tracing::warn!(
                target: "portcullis::audit", event = "admin.refused", reason = reason.code(), "admin API token refused"
            );
            return ApiError::InvalidToken.into_response();
        }
        Err(e) => {
            let cause = e.cause.unwrap_or_default();
            return ApiError::Failed(CliError::Store(domain::StoreError::Unavailable(cause))).into_response();
        }
    };
    let config = &api.runtime.config.admin;
    if !claims.aud.contains(&config.audience) {
        tracing::warn!(target: "portcullis::audit", event = "admin.refused", reason = "wrong_audience", subject = %claims.sub, "admin API token refused");
        return ApiError::InvalidToken.into_response();
    }
    // From where: the client address the transport resolved (behind trusted proxies, the
    // forwarded one).
    let ip = req.extensions().get::<domain::netaddr::ClientIp>().map(|c| c.0);
    if config.policies {
        // `config check` refuses admin.policies without a policy directory; were the engine
        // missing anyway, nothing is allowed (default deny).
        // The route's parameters as its handler will see them (percent-decoded by axum).
        let (mut parts, body) = req.into_parts();
        let params =
            axum::extract::Path::<std::collections::BTreeMap<String, String>>::from_request_parts(&mut parts, &())
                .await
                .map(|axum::extract::Path(p)| p)
                .unwrap_or_default();
        req = Request::from_parts(parts, body);
        let query = admin_query(&api, &claims, &req, ip, params);
        let verdict = api.authz.engine.as_ref().map(|engine| engine.decide(&query));
        if let Some(v) = &verdict {
            v.log(&query, api.authz.log_allows);
        }
        if !verdict.is_some_and(|v| v.allowed) {
            return ApiError::PolicyDenied.into_response();
        }
    } else {
        let scopes: Vec<&str> = claims.scope.as_deref().unwrap_or_default().split(' ').collect();
        let read_only = req.method() == Method::GET;
        let allowed =
            scopes.contains(&config.scope.as_str()) || (read_only && scopes.contains(&config.read_scope.as_str()));
        if !allowed {
            tracing::warn!(target: "portcullis::audit", event = "admin.refused", reason = "insufficient_scope", subject = %claims.sub, "admin API token refused");
            return ApiError::InsufficientScope.into_response();
        }
    }
    let remote = ip.map(|i| i.to_string()).unwrap_or_default();
    let span = tracing::info_span!(
        "admin",
        actor = %format!("token:{}", claims.sub),
        method = %req.method(),
        path = %req.uri().path(),
        remote_addr = %remote,
    );
    next.run(req).instrument(span).await
}

/// The resource the policies see for admin calls.
pub const ADMIN_RESOURCE: &str = "portcullis-admin";

/// The Cedar query of an admin call: the token's subject (a client when `sub` is its
/// `client_id`) with its roles, RBAC permissions, scopes and groups; the HTTP method; the
/// admin resource with the call's path and `params`, the parameters of its route.
fn admin_query(
    api: &AdminApi,
    claims: &domain::token::AccessTokenClaims,
    req: &Request,
    ip: Option<IpAddr>,
    params: std::collections::BTreeMap<String, String>,
) -> Query {
    use domain::policy::{Circumstances, Principal, PrincipalKind, Resource};
    let kind = if claims.sub == claims.client_id { PrincipalKind::Client } else { PrincipalKind::User };
    let mut attributes = std::collections::BTreeMap::new();
    if !claims.groups.is_empty() {
        attributes.insert("groups".to_owned(), Value::from(claims.groups.clone()));
    }
    let path = req.uri().path();
    Query {
        principal: Principal {
            kind: Some(kind),
            id: claims.sub.clone(),
            roles: claims.roles.clone(),
            permissions: api.authz.permissions_of(&claims.roles),
            scopes: claims.scopes().iter().map(ToString::to_string).collect(),
            client_id: Some(claims.client_id.clone()),
            attributes,
        },
        action: req.method().as_str().to_owned(),
        resource: Resource { route: ADMIN_RESOURCE.to_owned(), path: path.to_owned(), params },
        context: Circumstances {
            ip,
            time: api.tokens.clock().now(),
            mfa: false,
            method: req.method().as_str().to_owned(),
        },
    }
}

pub(crate) type Reply = Result<Json<Value>, ApiError>;

async fn clients(State(api): Api) -> Reply {
    let list = api.runtime.stores.clients.list_clients().await?;
    Ok(Json(json!(list.iter().map(crate::cli::client_json).collect::<Vec<_>>())))
}

async fn client(State(api): Api, Path(id): Path<String>) -> Reply {
    Ok(Json(crate::cli::client_json(&ops::find_client(&api.runtime, &id).await?)))
}

async fn disable_client(State(api): Api, Path(id): Path<String>) -> Reply {
    Ok(Json(crate::cli::client_json(&ops::set_client_disabled(&api.runtime, &id, true).await?)))
}

async fn enable_client(State(api): Api, Path(id): Path<String>) -> Reply {
    Ok(Json(crate::cli::client_json(&ops::set_client_disabled(&api.runtime, &id, false).await?)))
}

async fn users(State(api): Api) -> Reply {
    let list = api.runtime.stores.users.list_users().await?;
    Ok(Json(json!(list.iter().map(crate::user_cli::user_json).collect::<Vec<_>>())))
}

async fn user(State(api): Api, Path(username): Path<String>) -> Reply {
    Ok(Json(crate::user_cli::user_json(&crate::user_cli::find(&api.runtime, &username).await?)))
}

async fn sessions(State(api): Api, Path(username): Path<String>) -> Reply {
    Ok(Json(Value::Array(ops::sessions(&api.runtime, &username).await?)))
}

async fn keys(State(api): Api) -> Reply {
    Ok(Json(ops::keys_json(&api.runtime.stores.keys.list_keys().await?)))
}

async fn rotate_keys(State(api): Api) -> Reply {
    let key = ops::rotate_keys(&api.runtime, &api.keys).await?;
    Ok(Json(json!({ "kid": key.kid, "alg": key.alg.as_str(), "activates_at": key.activates_at })))
}

async fn api_keys(State(api): Api) -> Reply {
    let now = api.runtime.clock.now();
    let list = api.runtime.stores.api_keys.list_api_keys().await?;
    Ok(Json(json!(list.iter().map(|k| crate::apikey_cli::key_json(k, now)).collect::<Vec<_>>())))
}

async fn bans(State(api): Api) -> Reply {
    let list = api.runtime.stores.bans.list_bans(api.runtime.clock.now()).await?;
    Ok(Json(json!(list.iter().map(crate::ban_cli::ban_json).collect::<Vec<_>>())))
}

async fn lift_ban(State(api): Api, Path(ip): Path<String>) -> Reply {
    let ip: IpAddr = ip.parse().map_err(|_| CliError::Usage(format!("{ip:?} is not an IP address")))?;
    Ok(Json(json!({ "lifted": ops::lift_ban(&api.runtime, ip).await?.to_string() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeUser {
    username: String,
    #[serde(default)]
    disable: bool,
}

async fn revoke_user(State(api): Api, Body(body): Body<RevokeUser>) -> Reply {
    Ok(Json(json!(ops::revoke_user(&api.runtime, &body.username, body.disable).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeClient {
    client_id: String,
}

async fn revoke_client(State(api): Api, Body(body): Body<RevokeClient>) -> Reply {
    let n = ops::revoke_client(&api.runtime, &body.client_id).await?;
    Ok(Json(json!({ "client_id": body.client_id, "revoked_access_tokens": n })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeKey {
    kid: String,
}

async fn revoke_key(State(api): Api, Body(body): Body<RevokeKey>) -> Reply {
    let changes = ops::revoke_key(&api.runtime, &api.keys, &body.kid).await?;
    Ok(Json(json!({ "purged": body.kid, "changes": changes.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeApiKeys {
    owner: String,
}

async fn revoke_api_keys(State(api): Api, Body(body): Body<RevokeApiKeys>) -> Reply {
    Ok(Json(json!({ "owner": body.owner, "revoked": ops::revoke_api_keys(&api.runtime, &body.owner).await? })))
}

/// The head of the audit chain: its last sequence number and hash, to record elsewhere
/// (an external anchor; `portcullis audit verify` checks the whole chain).
async fn audit_head(State(api): Api) -> Reply {
    let head = api.runtime.stores.audit.audit_head().await?;
    Ok(Json(json!({ "head_seq": head.as_ref().map(|h| h.seq), "head_hash": head.map(|h| h.hash) })))
}
