//! The route table: compiled once from config, matched against the normalised path
//! (segment-wise prefix, ASCII case-insensitive, so `/Admin` cannot dodge an `/admin`
//! rule), the `Host` header and the method. Longest prefix wins.

use axum::http::Method;

use crate::config::{AuthMethod, RouteConfig};
use crate::proxy::{RouteProxy, Upstream};

/// A route: its configuration plus what was compiled from it once.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub cfg: RouteConfig,
    prefix: String,
    host: Option<String>,
    methods: Vec<Method>,
    pub auth: Vec<AuthMethod>,
    pub proxy: RouteProxy,
    /// The compiled `json_schema`, when the route has one.
    pub schema: Option<crate::schema::BodySchema>,
    /// The route's own rate limits; `None` means the gateway's defaults.
    pub limits: Option<Vec<domain::ratelimit::CompiledRule>>,
    pub meters: crate::meters::RouteMeters,
}

impl Route {
    /// # Errors
    /// The config was not validated (no upstream, bad URL, no auth).
    pub fn compile(c: &RouteConfig) -> Result<Self, String> {
        let upstreams = c
            .upstreams
            .iter()
            .map(|u| Upstream::parse(u).ok_or_else(|| format!("bad upstream {u:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = c.auth.as_ref().map(crate::config::AuthSpec::methods).ok_or("auth is required")?;
        let prefix = c.path_prefix.trim_end_matches('/').to_ascii_lowercase();
        let name = if c.name.is_empty() { c.path_prefix.clone() } else { c.name.clone() };
        Ok(Self {
            meters: crate::meters::RouteMeters::new(&name),
            name,
            prefix,
            host: c.host.as_ref().map(|h| h.to_ascii_lowercase()),
            methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect(),
            auth,
            proxy: RouteProxy::new(upstreams, c)?,
            schema: c.json_schema_doc.as_ref().map(crate::schema::BodySchema::compile).transpose()?,
            limits: c.rate_limits.as_deref().map(crate::config::compile_limits).transpose()?,
            cfg: c.clone(),
        })
    }

    fn matches_path(&self, path_lower: &str) -> bool {
        // "" is the root prefix and matches everything.
        path_lower.strip_prefix(&self.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn matches_host(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => {
                let got = got
                    .rsplit_once(':')
                    .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(got, |(h, _)| h);
                want.eq_ignore_ascii_case(got)
            }
            (Some(_), None) => false,
        }
    }
}

/// What matching found.
#[derive(Debug)]
pub enum Match<'a> {
    Found(&'a Route),
    /// A route matches the path but not the method.
    WrongMethod,
    None,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    #[must_use]
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    #[must_use]
    pub fn find(&self, host: Option<&str>, normalised_path: &str, method: &Method) -> Match<'_> {
        let lower = normalised_path.to_ascii_lowercase();
        let mut wrong_method = false;
        for route in self.routes.iter().filter(|r| r.matches_path(&lower) && r.matches_host(host)) {
            if route.methods.is_empty() || route.methods.contains(method) {
                return Match::Found(route);
            }
            wrong_method = true;
        }
        if wrong_method { Match::WrongMethod } else { Match::None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthSpec;

    fn route(name: &str, prefix: &str, methods: &[&str]) -> Route {
        Route::compile(&RouteConfig {
            name: name.into(),
            path_prefix: prefix.into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            auth: Some(AuthSpec::One(AuthMethod::None)),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            ..RouteConfig::default()
        })
        .unwrap()
    }

    fn name<'a>(m: Match<'a>) -> &'a str {
        match m {
            Match::Found(r) => &r.name,
            Match::WrongMethod => "405",
            Match::None => "404",
        }
    }

    #[test]
    fn longest_prefix_segment_wise_case_insensitive() {
        let t = RouteTable::new(vec![
            route("root", "/", &[]),
            route("admin", "/admin", &[]),
            route("api", "/api/v1/", &["GET"]),
        ]);
        let get = Method::GET;
        assert_eq!(name(t.find(None, "/admin", &get)), "admin");
        assert_eq!(name(t.find(None, "/Admin/x", &get)), "admin");
        assert_eq!(name(t.find(None, "/ADMIN", &get)), "admin");
        assert_eq!(name(t.find(None, "/administrator", &get)), "root");
        assert_eq!(name(t.find(None, "/api/v1/x", &get)), "api");
        assert_eq!(
            name(t.find(None, "/api/v1/x", &Method::POST)),
            "root",
            "falls through to a route that allows the method"
        );
        let only_api = RouteTable::new(vec![route("api", "/api", &["GET"])]);
        assert_eq!(name(only_api.find(None, "/api", &Method::DELETE)), "405");
        assert_eq!(name(only_api.find(None, "/other", &get)), "404");
    }
}
