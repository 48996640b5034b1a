//! Server-rendered HTML (login, consent, logout, error) that works without JavaScript, and
//! the browser-facing plumbing around it: cookies (`__Host-` prefixed over https, HttpOnly,
//! SameSite), double-submit CSRF tokens, and a strict Content-Security-Policy per page.
//! Templates are compiled into the binary and auto-escaped (minijinja, `.html`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;
use subtle::ConstantTimeEq as _;

/// The stylesheet every page links; served at [`crate::paths::ASSETS_CSS`].
pub const CSS: &str = include_str!("../templates/portcullis.css");

/// The compiled templates and cookie settings.
#[derive(Debug)]
pub struct Pages {
    env: Environment<'static>,
    /// Cookies get `Secure` and the `__Host-` prefix (the issuer is https).
    secure: bool,
}

/// Cookie names without their prefix.
pub const SESSION_COOKIE: &str = "portcullis_session";
pub const CSRF_COOKIE: &str = "portcullis_csrf";

impl Pages {
    /// # Errors
    /// A template does not compile (a build defect, caught by the tests).
    pub fn new(secure: bool) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("../templates/base.html"))?;
        env.add_template("login.html", include_str!("../templates/login.html"))?;
        env.add_template("consent.html", include_str!("../templates/consent.html"))?;
        env.add_template("error.html", include_str!("../templates/error.html"))?;
        env.add_template("logout.html", include_str!("../templates/logout.html"))?;
        Ok(Self { env, secure })
    }

    /// The cookie's full name (`__Host-` prefixed over https, RFC 6265bis §4.1.3.2).
    #[must_use]
    pub fn cookie_name(&self, base: &str) -> String {
        if self.secure { format!("__Host-{base}") } else { base.to_owned() }
    }

    /// A cookie value sent by the browser.
    #[must_use]
    pub fn cookie<'h>(&self, headers: &'h HeaderMap, base: &str) -> Option<&'h str> {
        let values = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
        domain::request::cookie_value(values, &self.cookie_name(base))
    }

    /// `Set-Cookie` for a value; `max_age` 0 deletes it.
    #[must_use]
    pub fn set_cookie(&self, base: &str, value: &str, max_age: i64, same_site: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}",
            self.cookie_name(base)
        );
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("invalid=1; Max-Age=0"))
    }

    /// The CSRF token for a form: the browser's existing one, or a new one to set.
    #[must_use]
    pub fn csrf(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        match self.cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43) {
            Some(existing) => (existing.to_owned(), None),
            None => {
                let token = domain::secret::random_token(32);
                // Strict: a cross-site form post never carries it.
                let cookie = self.set_cookie(CSRF_COOKIE, &token, 3600, "Strict");
                (token, Some(cookie))
            }
        }
    }

    /// Double-submit check: the form's token equals the cookie's, in constant time.
    #[must_use]
    pub fn csrf_ok(&self, headers: &HeaderMap, submitted: Option<&str>) -> bool {
        match (self.cookie(headers, CSRF_COOKIE), submitted) {
            (Some(cookie), Some(form)) if cookie.len() == 43 => cookie.as_bytes().ct_eq(form.as_bytes()).into(),
            _ => false,
        }
    }

    /// Renders a page with the security headers; `form_target` is an extra origin the page's
    /// form may end up at (the client's redirect URI, reached by a redirect after POST).
    #[must_use]
    pub fn render<C: Serialize>(
        &self,
        status: StatusCode,
        template: &str,
        context: C,
        form_target: Option<&str>,
    ) -> Response {
        let body = match self.env.get_template(template).and_then(|t| t.render(context)) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(template, error = %e, "template failed to render");
                return (StatusCode::INTERNAL_SERVER_ERROR, "page unavailable").into_response();
            }
        };
        let mut response = (status, body).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        let extra = form_target.and_then(form_action_source).unwrap_or_default();
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{extra}; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        response
    }

    /// The error page (never a redirect: the client or redirect URI is not trusted).
    #[must_use]
    pub fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.render(status, "error.html", minijinja::context! { code, message }, None)
    }
}

/// The CSP source for where a redirect after the form may go: its origin, or its scheme
/// for a native app's private-use URI.
fn form_action_source(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    let source = match url.scheme() {
        "http" | "https" => url.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    };
    // Only characters a CSP source may hold; anything else is dropped rather than injected.
    source.chars().all(|c| c.is_ascii_alphanumeric() || "-.:/[]".contains(c)).then(|| format!(" {source}"))
}

/// A 303 to `location` (after a form POST the browser must GET the target).
#[must_use]
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_escape() {
        let pages = Pages::new(true).unwrap();
        let r = pages.render(
            StatusCode::OK,
            "login.html",
            minijinja::context! { client_name => "<script>x</script>", csrf => "c", request => "a=1&b=\"2\"", username => "", error => "" },
            Some("https://app.example.com/cb"),
        );
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("form-action 'self' https://app.example.com;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }

    #[test]
    fn cookies_are_prefixed_and_parsed() {
        let pages = Pages::new(true).unwrap();
        let set = pages.set_cookie(SESSION_COOKIE, "v", 60, "Lax");
        assert_eq!(set, "__Host-portcullis_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; portcullis_session=evil; __Host-portcullis_session=good"),
        );
        assert_eq!(pages.cookie(&h, SESSION_COOKIE), Some("good"));
        let plain = Pages::new(false).unwrap();
        assert_eq!(plain.cookie(&h, SESSION_COOKIE), Some("evil"));
        assert!(!plain.set_cookie(SESSION_COOKIE, "v", 60, "Lax").to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn csrf_double_submit() {
        let pages = Pages::new(false).unwrap();
        let (token, set) = pages.csrf(&HeaderMap::new());
        assert!(set.is_some());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("portcullis_csrf={token}")).unwrap());
        assert!(pages.csrf_ok(&h, Some(&token)));
        assert!(!pages.csrf_ok(&h, Some("x")));
        assert!(!pages.csrf_ok(&h, None));
        assert!(!pages.csrf_ok(&HeaderMap::new(), Some(&token)));
        assert_eq!(form_action_source("com.example.app:/cb").as_deref(), Some(" com.example.app:"));
    }
}
