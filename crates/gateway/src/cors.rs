//! CORS per route (the Fetch standard's CORS protocol): an allow-list of exact origins,
//! preflights answered by the gateway itself (they carry no credentials, so they never
//! reach authentication or the upstream), and the response headers on actual requests.
//! `*` is accepted only without credentials, as the standard requires.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use serde::Deserialize;

use domain::settings::Seconds;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `["*"]` when credentials are off.
    pub allowed_origins: Vec<String>,
    /// Methods a cross-origin request may use.
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send (case-insensitive).
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may show to the script.
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `Authorization`).
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Seconds,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            allowed_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: Seconds(600),
        }
    }
}

impl CorsConfig {
    /// Every problem with the section.
    #[must_use]
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.allowed_origins.is_empty() {
            errors.push(format!("{at}.cors.allowed_origins must not be empty"));
        }
        let wildcard = self.allowed_origins.iter().any(|o| o == "*");
        if wildcard && self.allow_credentials {
            errors.push(format!("{at}.cors: \"*\" cannot be combined with allow_credentials (list exact origins)"));
        }
        for origin in self.allowed_origins.iter().filter(|o| *o != "*") {
            if !is_serialized_origin(origin) {
                errors.push(format!(
                    "{at}.cors: {origin:?} is not an origin (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        for m in &self.allowed_methods {
            if Method::from_bytes(m.as_bytes()).is_err() {
                errors.push(format!("{at}.cors: {m:?} is not an HTTP method"));
            }
        }
        for h in self.allowed_headers.iter().chain(&self.expose_headers) {
            if header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                errors.push(format!("{at}.cors: {h:?} is not a header name"));
            }
        }
        errors
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        // Exact, byte-for-byte: no suffix or case leniency (`https://app.example.com.evil`).
        self.allowed_origins.iter().any(|o| o == origin || (o == "*" && !self.allow_credentials))
    }

    fn method_allowed(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    fn header_allowed(&self, name: &str) -> bool {
        self.allowed_headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// The answer to a preflight: the headers to send, or `None` to refuse it.
    #[must_use]
    pub fn preflight(&self, request: &HeaderMap) -> Option<HeaderMap> {
        let origin = request.get(header::ORIGIN)?.to_str().ok()?;
        let method = request.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        if !self.origin_allowed(origin) || !self.method_allowed(method) {
            return None;
        }
        let requested: Vec<&str> = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if !requested.iter().all(|h| self.header_allowed(h)) {
            return None;
        }
        let mut out = self.common(origin)?;
        let mut put = |name, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.insert(name, v);
            }
        };
        put(header::ACCESS_CONTROL_ALLOW_METHODS, self.allowed_methods.join(", "));
        if !requested.is_empty() {
            put(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.join(", "));
        }
        put(header::ACCESS_CONTROL_MAX_AGE, self.max_age.0.to_string());
        Some(out)
    }

    /// Headers added to the response of an actual cross-origin request whose origin is
    /// allowed; nothing otherwise (the browser then withholds the response from the script).
    #[must_use]
    pub fn response_headers(&self, request: &HeaderMap) -> Option<HeaderMap> {
        let origin = request.get(header::ORIGIN)?.to_str().ok()?;
        if !self.origin_allowed(origin) {
            return None;
        }
        let mut out = self.common(origin)?;
        if !self.expose_headers.is_empty()
            && let Ok(v) = HeaderValue::from_str(&self.expose_headers.join(", "))
        {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        Some(out)
    }

    fn common(&self, origin: &str) -> Option<HeaderMap> {
        let mut out = HeaderMap::new();
        // Echo the one matching origin, never the list; Vary so caches keep answers apart.
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_str(origin).ok()?);
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        if self.allow_credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        Some(out)
    }
}

/// Whether a request is a CORS preflight.
#[must_use]
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// `scheme://host[:port]` as browsers serialise it: lowercase scheme, no path, no slash.
fn is_serialized_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "https" | "http")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn cfg(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_credentials: credentials,
            ..CorsConfig::default()
        }
    }

    #[test]
    fn validation() {
        assert!(cfg(&["https://app.example.com", "http://localhost:3000"], true).validate("r").is_empty());
        assert!(cfg(&["*"], false).validate("r").is_empty());
        assert_eq!(cfg(&["*"], true).validate("r").len(), 1);
        for bad in ["app.example.com", "https://app.example.com/", "https://a.example/path", "ftp://a", "https://"] {
            assert_eq!(cfg(&[bad], false).validate("r").len(), 1, "{bad}");
        }
        assert_eq!(cfg(&[], false).validate("r").len(), 1);
    }

    #[test]
    fn preflight_answers_only_what_is_allowed() {
        let c = cfg(&["https://app.example.com"], true);
        let ok = c
            .preflight(&headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "Content-Type, authorization"),
            ]))
            .unwrap();
        assert_eq!(ok["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(ok["access-control-allow-credentials"], "true");
        assert_eq!(ok["access-control-allow-methods"], "GET, HEAD, POST");
        assert_eq!(ok["access-control-allow-headers"], "Content-Type, authorization");
        assert_eq!(ok["access-control-max-age"], "600");
        assert_eq!(ok["vary"], "Origin");
        for refused in [
            headers(&[("origin", "https://evil.example"), ("access-control-request-method", "GET")]),
            headers(&[("origin", "https://app.example.com.evil"), ("access-control-request-method", "GET")]),
            headers(&[("origin", "https://APP.example.com"), ("access-control-request-method", "GET")]),
            headers(&[("origin", "null"), ("access-control-request-method", "GET")]),
            headers(&[("origin", "https://app.example.com"), ("access-control-request-method", "DELETE")]),
            headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-portcullis-subject"),
            ]),
        ] {
            assert!(c.preflight(&refused).is_none(), "{refused:?}");
        }
    }

    #[test]
    fn actual_requests_get_headers_for_allowed_origins_only() {
        let c = CorsConfig { expose_headers: vec!["x-request-id".into()], ..cfg(&["https://app.example.com"], false) };
        let h = c.response_headers(&headers(&[("origin", "https://app.example.com")])).unwrap();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert!(h.get("access-control-allow-credentials").is_none());
        assert!(c.response_headers(&headers(&[("origin", "https://evil.example")])).is_none());
        assert!(c.response_headers(&headers(&[])).is_none());
        let any = cfg(&["*"], false);
        let h = any.response_headers(&headers(&[("origin", "https://x.example")])).unwrap();
        assert_eq!(h["access-control-allow-origin"], "https://x.example");
    }
}
