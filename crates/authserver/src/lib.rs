//! The OAuth 2.1 / OpenID Connect endpoints of Portcullis as one axum router. Every route
//! of the crate is listed in [`router`]. Knows the domain only (not the store, not the
//! gateway): its dependencies arrive in [`AppState`] as trait objects.

pub mod cors;
pub mod dpop;
pub mod extract;
pub mod health;
pub mod limits;
pub mod metadata;
pub mod oauth;
pub mod pages;
pub mod signin;
pub mod telemetry;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use domain::ports::Health;
use domain::service::TokenService;
use domain::signin::SignIn;

/// Paths of the public endpoints, below the issuer URL.
pub mod paths {
    pub const TOKEN: &str = "/oauth2/token";
    pub const INTROSPECT: &str = "/oauth2/introspect";
    pub const REVOKE: &str = "/oauth2/revoke";
    pub const JWKS: &str = "/oauth2/jwks";
    pub const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";
    pub const OIDC_METADATA: &str = "/.well-known/openid-configuration";
    pub const AUTHORIZE: &str = "/oauth2/authorize";
    pub const LOGIN: &str = "/oauth2/login";
    pub const CONSENT: &str = "/oauth2/consent";
    pub const LOGOUT: &str = "/oauth2/logout";
    pub const USERINFO: &str = "/oauth2/userinfo";
    pub const ASSETS_CSS: &str = "/assets/portcullis.css";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
}

/// What the handlers need, shared by reference. Axum clones the state for every request,
/// so the router holds it in one `Arc` (one reference count per request, not one per field;
/// cloning the services themselves, each holding a dozen `Arc`s, was 5% of a token
/// request's CPU, and the clone of this struct's eight pointers another 3%).
#[derive(Debug, Clone)]
pub struct AppState {
    pub tokens: Arc<TokenService>,
    pub signin: Arc<SignIn>,
    pub pages: Arc<pages::Pages>,
    /// Origins allowed to call the app-facing endpoints (kept current by the server).
    pub web_origins: Arc<cors::WebOrigins>,
    pub health: Arc<dyn Health>,
    /// The serialized metadata document, built once.
    pub metadata: Arc<String>,
    /// Rate limits and bans; `None` turns both off.
    pub protection: Option<Arc<limits::AuthProtection>>,
    /// DPoP proofs and client certificates at the token and userinfo endpoints.
    pub sender: Arc<SenderConstraints>,
}

/// How this server binds tokens to client keys: DPoP (RFC 9449) always; certificates
/// (RFC 8705) when its listener asks for them.
#[derive(Debug, Clone)]
pub struct SenderConstraints {
    pub checker: domain::dpop::Dpop,
    /// Require a server nonce in proofs at the token endpoint (RFC 9449 §8).
    pub nonce_at_token: bool,
    /// Require a server nonce in proofs at userinfo (RFC 9449 §9).
    pub nonce_at_userinfo: bool,
    /// The listener verifies client certificates against `tls.client_ca_file`.
    pub mtls: bool,
}

impl AppState {
    /// # Errors
    /// A page template does not compile.
    pub fn new(
        signin: SignIn,
        health: Arc<dyn Health>,
        algorithm: domain::jose::Algorithm,
        sender: SenderConstraints,
    ) -> Result<Self, minijinja::Error> {
        let tokens = signin.tokens().clone();
        let issuer = &tokens.settings().issuer;
        let metadata = metadata::document(issuer, algorithm, &sender).to_string();
        let pages = pages::Pages::new(issuer.as_str().starts_with("https://"))?;
        Ok(Self {
            tokens: Arc::new(tokens),
            signin: Arc::new(signin),
            pages: Arc::new(pages),
            web_origins: Arc::default(),
            health,
            metadata: Arc::new(metadata),
            protection: None,
            sender: Arc::new(sender),
        })
    }
}

/// The public router of the authorization server.
pub fn router(state: AppState) -> Router {
    let origins = state.web_origins.clone();
    let protection = state.protection.clone();
    Router::new()
        .route(paths::TOKEN, post(oauth::post_token).layer(DefaultBodyLimit::max(extract::body_limit(extract::TOKEN))))
        .route(
            paths::INTROSPECT,
            post(oauth::post_introspect).layer(DefaultBodyLimit::max(extract::body_limit(extract::INTROSPECT))),
        )
        .route(
            paths::REVOKE,
            post(oauth::post_revoke).layer(DefaultBodyLimit::max(extract::body_limit(extract::REVOKE))),
        )
        .route(paths::AUTHORIZE, get(signin::get_authorize).post(signin::post_authorize))
        .route(paths::LOGIN, post(signin::post_login))
        .route(paths::CONSENT, post(signin::post_consent))
        .route(paths::LOGOUT, get(signin::logout).post(signin::logout))
        .route(paths::USERINFO, get(signin::userinfo).post(signin::userinfo))
        .route(paths::ASSETS_CSS, get(signin::get_css))
        .route(paths::JWKS, get(metadata::get_jwks))
        .route(paths::OAUTH_METADATA, get(metadata::get_metadata))
        .route(paths::OIDC_METADATA, get(metadata::get_metadata))
        .route(paths::HEALTHZ, get(health::get_healthz))
        .route(paths::READYZ, get(health::get_readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Anything bigger than a form is refused before it is buffered.
        .layer(DefaultBodyLimit::max(extract::MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(origins, cors::layer))
        .layer(axum::middleware::from_fn_with_state(protection, limits::layer))
        .layer(axum::middleware::from_fn(telemetry::request_span))
        .with_state(Arc::new(state))
}

async fn not_found() -> Response {
    wire::problem(StatusCode::NOT_FOUND, "Not Found", "no such endpoint")
}

async fn method_not_allowed() -> Response {
    wire::problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "this endpoint does not accept that method")
}
