//! Handlers of the browser-facing endpoints: authorization (RFC 6749 §4.1.1, OIDC Core
//! §3.1.2), the login and consent forms, RP-initiated logout, and userinfo (OIDC Core §5.3,
//! bearer per RFC 6750). Each: extract → one domain call → page, redirect or JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::authorize::{AuthorizationRequest, AuthorizeError};
use domain::netaddr::ClientIp;
use domain::signin::{LoginOutcome, Next};
use domain::{ErrorCode, OAuthError};
use minijinja::context;
use zeroize::Zeroizing;

use crate::AppState;
use crate::dpop;
use crate::extract::parse_form;
use crate::pages::{SESSION_COOKIE, see_other};
use crate::wire::{ApiError, no_store_json};

/// `GET /oauth2/authorize`
pub async fn get_authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(&state, &headers, query.unwrap_or_default()).await
}

/// `POST /oauth2/authorize` (OIDC Core §3.1.2.1: the form-encoded variant).
pub async fn post_authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else { return body_refused(&state) };
    authorize(&state, &headers, String::from_utf8_lossy(&body).into_owned()).await
}

async fn authorize(state: &AppState, headers: &HeaderMap, raw: String) -> Response {
    let request = match parse_request(state, &raw).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let session_cookie = state.pages.cookie(headers, SESSION_COOKIE);
    let result = match state.signin.session(session_cookie).await {
        Ok(signed_in) => state.signin.authorize(request, signed_in, false, false).await,
        Err(e) => Err(e),
    };
    render_next(state, headers, result, &raw, None)
}

/// `POST /oauth2/login`
pub async fn post_login(
    State(state): State<Arc<AppState>>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (form, raw, request) = match checked_form(&state, &headers, body).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let username = form.optional("username").ok().flatten().unwrap_or_default();
    let password = Zeroizing::new(form.optional("password").ok().flatten().unwrap_or_default().to_owned());
    let previous = state.pages.cookie(&headers, SESSION_COOKIE);
    let ip = client.to_string();
    let refused = |message, status| login_page(&state, &headers, &request, &raw, username, Some(message), status);
    match state.signin.login(username, password, &ip, previous).await {
        Ok(LoginOutcome::Ok { cookie, signed_in }) => {
            let max_age = state.signin.tokens().settings().flow.session_absolute_ttl;
            let set = state.pages.set_cookie(SESSION_COOKIE, &cookie, max_age, "Lax");
            let result = state.signin.authorize(request, Some(*signed_in), true, false).await;
            render_next(&state, &headers, result, &raw, Some(set))
        }
        Ok(LoginOutcome::Failed) => {
            let mut r = refused("Incorrect username or password.", StatusCode::FORBIDDEN);
            r.extensions_mut().insert(crate::limits::FailedLogin(username.to_owned()));
            r
        }
        Ok(LoginOutcome::Locked { retry_after }) => {
            let mut r =
                refused("Too many failed attempts. Wait a while, then try again.", StatusCode::TOO_MANY_REQUESTS);
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(e) => server_trouble(&state, &e),
    }
}

/// `POST /oauth2/consent`
pub async fn post_consent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (form, raw, request) = match checked_form(&state, &headers, body).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let allow = form.optional("decision").ok().flatten() == Some("allow");
    let result = match state.signin.session(state.pages.cookie(&headers, SESSION_COOKIE)).await {
        Ok(signed_in) => state.signin.consent(request, signed_in, allow).await,
        Err(e) => Err(e),
    };
    render_next(&state, &headers, result, &raw, None)
}

/// `GET|POST /oauth2/logout` (OIDC RP-Initiated Logout 1.0). Without a valid
/// `id_token_hint` for the signed-in user, the user confirms on a form first, so another
/// site cannot sign them out with a link.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else { return body_refused(&state) };
    let raw = if body.is_empty() { query.unwrap_or_default().into_bytes() } else { body.to_vec() };
    let Ok(params) = parse_form(&raw) else { return bad_form(&state) };
    let request = match state.signin.logout_request(&params).await {
        Ok(r) => r,
        Err(e) => return page_error(&state, &e),
    };
    let cookie = state.pages.cookie(&headers, SESSION_COOKIE);
    let signed_in = match state.signin.session(cookie).await {
        Ok(s) => s,
        Err(e) => return server_trouble(&state, &e),
    };
    let hint_matches =
        request.hint_sub.is_some() && signed_in.as_ref().is_none_or(|s| Some(&s.user.id) == request.hint_sub.as_ref());
    let confirmed = params.optional("confirm").ok().flatten() == Some("yes")
        && state.pages.csrf_ok(&headers, params.optional("csrf").ok().flatten());
    if signed_in.is_some() && !hint_matches && !confirmed {
        let (csrf, set) = state.pages.csrf(&headers);
        let keep: Vec<(&str, &str)> = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"]
            .into_iter()
            .filter_map(|k| params.optional(k).ok().flatten().map(|v| (k, v)))
            .collect();
        let mut r =
            state.pages.render(StatusCode::OK, "logout.html", context! { done => false, csrf, params => keep }, None);
        if let Some(set) = set {
            r.headers_mut().append(header::SET_COOKIE, set);
        }
        return r;
    }
    if let Some(cookie) = cookie
        && let Err(e) = state.signin.logout(cookie).await
    {
        return server_trouble(&state, &e);
    }
    let mut response = match &request.redirect {
        Some(target) => see_other(target),
        None => state.pages.render(StatusCode::OK, "logout.html", context! { done => true }, None),
    };
    response.headers_mut().append(header::SET_COOKIE, state.pages.set_cookie(SESSION_COOKIE, "", 0, "Lax"));
    response
}

/// `GET|POST /oauth2/userinfo`
pub async fn userinfo(
    State(state): State<Arc<AppState>>,
    method: axum::http::Method,
    certificate: Option<axum::Extension<domain::client::ClientCertificate>>,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop"))
        .map(|(scheme, t)| (scheme.eq_ignore_ascii_case("dpop"), t.trim()));
    let Some((dpop, token)) = presented.filter(|(_, t)| !t.is_empty()) else {
        // RFC 6750 §3.1: "If the request lacks any authentication information …, the resource
        // server SHOULD NOT include an error code".
        let mut r = (
            StatusCode::UNAUTHORIZED,
            no_store_json(
                r#"{"error":"invalid_request","error_description":"an access token is required"}"#.to_owned(),
            ),
        )
            .into_response();
        let challenge = format!(r#"Bearer realm="portcullis", DPoP realm="portcullis", algs="{}""#, dpop::algs(&state));
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    };
    let proof = if dpop {
        match dpop::userinfo_proof(&state, &headers, method.as_str(), token).await {
            Ok(proof) => Some(proof),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let presented = domain::dpop::Presentation {
        dpop_jkt: proof.as_ref().map(|p| p.jkt.as_str()),
        certificate: certificate.as_ref().map(|c| c.thumbprint.as_str()),
    };
    match state.signin.userinfo(token, &presented).await {
        Ok(claims) => no_store_json(serde_json::Value::Object(claims).to_string()).into_response(),
        Err(e) if dpop => ApiError::new("userinfo", e).dpop_challenge(dpop::algs(&state)).into_response(),
        Err(e) => ApiError::new("userinfo", e).into_response(),
    }
}

/// `GET /assets/portcullis.css`
pub async fn get_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        crate::pages::CSS,
    )
        .into_response()
}

/// A login or consent form: read within the size limit, parsed, CSRF-checked, and its authorization request re-validated.
async fn checked_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(domain::request::FormParams, String, AuthorizationRequest), Response> {
    let body = body.map_err(|_| body_refused(state))?;
    let form = parse_form(&body).map_err(|_| bad_form(state))?;
    if !state.pages.csrf_ok(headers, form.optional("csrf").ok().flatten()) {
        return Err(csrf_failed(state));
    }
    let raw = form.optional("request").ok().flatten().unwrap_or_default().to_owned();
    let request = parse_request(state, &raw).await?;
    Ok((form, raw, request))
}

async fn parse_request(state: &AppState, raw: &str) -> Result<AuthorizationRequest, Response> {
    let params = parse_form(raw.as_bytes()).map_err(|_| bad_form(state))?;
    state.signin.parse_request(&params).await.map_err(|e| match e {
        AuthorizeError::Page(e) => page_error(state, &e),
        AuthorizeError::Redirect(r) => {
            log_refusal(&r.error);
            see_other(&r.to_url(state.signin.tokens().settings().issuer.as_str()))
        }
    })
}

fn render_next(
    state: &AppState,
    headers: &HeaderMap,
    next: Result<Next, OAuthError>,
    raw: &str,
    set_session: Option<HeaderValue>,
) -> Response {
    let mut response = match next {
        Ok(Next::Redirect(url)) => see_other(&url),
        Ok(Next::Login(request)) => login_page(state, headers, &request, raw, "", None, StatusCode::OK),
        Ok(Next::Consent(request, user)) => {
            let (csrf, set) = state.pages.csrf(headers);
            let scopes: Vec<&str> = request.scope.iter().collect();
            let mut r = state.pages.render(
                StatusCode::OK,
                "consent.html",
                context! { client_name => request.client.name, username => user.username, scopes, csrf, request => raw },
                Some(&request.redirect_uri),
            );
            if let Some(set) = set {
                r.headers_mut().append(header::SET_COOKIE, set);
            }
            r
        }
        Err(e) => server_trouble(state, &e),
    };
    if let Some(set) = set_session {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    response
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizationRequest,
    raw: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (csrf, set) = state.pages.csrf(headers);
    let username = if username.is_empty() { request.login_hint.as_deref().unwrap_or("") } else { username };
    let mut r = state.pages.render(
        status,
        "login.html",
        context! { client_name => request.client.name, csrf, request => raw, username, error => error.unwrap_or("") },
        Some(&request.redirect_uri),
    );
    if let Some(set) = set {
        r.headers_mut().append(header::SET_COOKIE, set);
    }
    r
}

fn log_refusal(e: &OAuthError) {
    tracing::warn!(
        target: "portcullis::audit",
        event = "authorize.refused",
        error = e.code.as_str(),
        cause = e.cause.as_deref().unwrap_or(""),
        "authorization request refused"
    );
}

fn page_error(state: &AppState, e: &OAuthError) -> Response {
    log_refusal(e);
    state.pages.error(StatusCode::BAD_REQUEST, e.code.as_str(), &e.description)
}

/// The body could not be read, or is larger than a form may be (64 KiB): an error page.
fn body_refused(state: &AppState) -> Response {
    state.pages.error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "The request is too large.")
}

fn bad_form(state: &AppState) -> Response {
    state.pages.error(StatusCode::BAD_REQUEST, "invalid_request", "The request is not valid form data.")
}

fn csrf_failed(state: &AppState) -> Response {
    tracing::warn!(target: "portcullis::audit", event = "request.csrf_failed", "form submitted without a valid CSRF token");
    state.pages.error(
        StatusCode::FORBIDDEN,
        "invalid_request",
        "The form expired or was not sent by this site. Go back and try again.",
    )
}

fn server_trouble(state: &AppState, e: &OAuthError) -> Response {
    let status = if e.code == ErrorCode::TemporarilyUnavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::error!(target: "portcullis::audit", event = "request.failed", error = e.code.as_str(), cause = e.cause.as_deref().unwrap_or(""), "sign-in step failed");
    state.pages.error(status, e.code.as_str(), "The server could not complete the request. Try again shortly.")
}
