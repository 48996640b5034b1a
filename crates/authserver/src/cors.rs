//! CORS for browser apps (Fetch standard): single-page apps call the token, revocation and
//! userinfo endpoints from their own origin. Allowed origins are those of registered redirect
//! URIs (refreshed by the server from the client store); the response reflects the origin
//! and never allows credentials (these endpoints take no cookies). Discovery and the JWKS
//! are public documents and allow any origin.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::paths;

/// The origins allowed to call the app-facing endpoints, swapped as a whole.
#[derive(Debug, Default)]
pub struct WebOrigins(ArcSwap<BTreeSet<String>>);

impl WebOrigins {
    pub fn replace(&self, origins: BTreeSet<String>) {
        self.0.store(Arc::new(origins));
    }

    #[must_use]
    pub fn allows(&self, origin: &str) -> bool {
        self.0.load().contains(origin)
    }
}

/// Which endpoints answer cross-origin requests, and how.
fn policy(path: &str) -> Option<bool> {
    match path {
        // Public documents: any origin.
        paths::JWKS | paths::OAUTH_METADATA | paths::OIDC_METADATA => Some(true),
        // App-facing endpoints: registered origins only.
        paths::TOKEN | paths::REVOKE | paths::USERINFO => Some(false),
        _ => None,
    }
}

pub async fn layer(State(origins): State<Arc<WebOrigins>>, req: Request, next: Next) -> Response {
    let Some(public) = policy(req.uri().path()) else { return next.run(req).await };
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_owned);
    let allowed = origin.as_deref().filter(|o| public || origins.allows(o)).map(str::to_owned);
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match &allowed {
            Some(_) => preflight_response(),
            // Not an allowed origin: a plain answer without CORS headers; the browser blocks.
            None => StatusCode::NO_CONTENT.into_response(),
        }
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        let value = if public {
            HeaderValue::from_static("*")
        } else {
            HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("null"))
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if !preflight {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("www-authenticate, dpop-nonce"));
        }
    }
    response
}

fn preflight_response() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST")),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type, dpop")),
            (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
        ],
    )
        .into_response()
}
