//! The Cedar facade: loads and validates a policy set against its schema, builds the
//! entities of one request (principal, action, resource, context) from verified facts only,
//! and answers allow/deny with the ids of the policies that decided. Default deny.
//!
//! The gateway and the CLI (`portcullis policy test`) call [`PolicyEngine::decide`] with the
//! same [`Query`], so a decision tested in CI is the decision the gateway makes.
//!
//! Entity model (see `policies/schema.cedarschema`):
//! - principal: `User::"<sub>"` (a person), `Client::"<client_id>"` (a machine client or a
//!   client certificate), `ApiKey::"<id>"`, or `Anonymous::"anonymous"`; attributes `id`,
//!   `roles`, `permissions` (from the RBAC map), `scopes`, `client_id`, plus mapped claims
//!   (`tenant`, `department`, `groups`, …); parents `Role::"<role>"` for each role, so
//!   `principal in Role::"admin"` works.
//! - action: `Action::"<name>"`: the route's name for the method, else the method itself.
//! - resource: `Route::"<route name>"` with `path` and the route pattern's parameters as
//!   attributes (`/users/{id}` → `resource.id`).
//! - context: `ip` (ipaddr), `time` (Unix seconds), `hour` and `weekday` (UTC, Monday = 0),
//!   `mfa`, `authenticated`, `client_id`, `scopes`, `method`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

/// A loaded, validated policy set.
///
/// Indexed by route: Cedar evaluates every policy of the set it is given, so a policy
/// scoped to `resource == Route::"x"` (or `in`; routes have no parents) goes only into
/// route `x`'s set, and policies for any resource into every set. A request is decided
/// against its route's set — the same answer as the whole set, at the cost of the route's
/// policies instead of all of them.
#[derive(Debug)]
pub struct Policies {
    /// Policies that can apply to any route.
    general: PolicySet,
    /// Route name → its policies plus the general ones.
    by_route: HashMap<String, PolicySet>,
    /// The schema's action entities (for `action in [group]`).
    actions: Vec<Entity>,
    /// Which request-varying context values the policies can read: what a remembered
    /// decision is keyed by, and whether to build the `ipaddr` value at all (it costs more
    /// than the rest of the context together: Cedar parses the extension's name each time).
    reads: Reads,
    /// Policy id → the file it came from, for messages.
    pub sources: BTreeMap<String, String>,
}

impl Policies {
    /// Parses every `(file name, text)` policy file and the schema, names each policy (its
    /// `@id("…")` annotation, else `<file>#<n>`), and validates them strictly against the
    /// schema.
    ///
    /// # Errors
    /// Every problem found, each naming its file.
    pub fn load(files: &[(String, String)], schema_text: &str) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let schema = match Schema::from_cedarschema_str(schema_text) {
            Ok((schema, _warnings)) => Some(schema),
            Err(e) => {
                errors.push(format!("schema: {e}"));
                None
            }
        };
        let mut set = PolicySet::new();
        let mut sources = BTreeMap::new();
        for (file, text) in files {
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{file}: {}", one_line(&e)));
                    continue;
                }
            };
            for (n, policy) in parsed.policies().enumerate() {
                let id = policy.annotation("id").map_or_else(|| format!("{file}#{n}"), str::to_owned);
                if sources.contains_key(&id) {
                    errors.push(format!("{file}: policy id {id:?} is used twice"));
                    continue;
                }
                let renamed: Policy = policy.new_id(PolicyId::new(&id));
                if let Err(e) = set.add(renamed) {
                    errors.push(format!("{file}: {e}"));
                    continue;
                }
                sources.insert(id, file.clone());
            }
            if parsed.templates().next().is_some() {
                errors.push(format!("{file}: policy templates are not supported"));
            }
        }
        let Some(schema) = schema else { return Err(errors) };
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let file = sources.get(&id).map_or("?", String::as_str);
            errors.push(format!("{file}: policy {id}: {}", one_line(e)));
        }
        // Action entities matter only for `action in <group>`; without groups in the
        // schema, equality needs no entities and each request skips building them.
        let actions = match schema.action_entities() {
            Ok(a) if a.iter().any(has_parents) => a.iter().cloned().collect(),
            Ok(_) => Vec::new(),
            Err(e) => {
                errors.push(format!("schema actions: {e}"));
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (general, by_route) = index(&set).map_err(|e| vec![e])?;
        let reads = Reads::of(files.iter().map(|(_, text)| text.as_str()));
        Ok(Self { general, by_route, actions, sources, reads })
    }

    /// The policies that can apply to a request for `route`.
    fn for_route(&self, route: &str) -> &PolicySet {
        self.by_route.get(route).unwrap_or(&self.general)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// Splits `set` into the policies for any route and those for one route each.
fn index(set: &PolicySet) -> Result<(PolicySet, HashMap<String, PolicySet>), String> {
    let route_of = |p: &Policy| match p.resource_constraint() {
        cedar_policy::ResourceConstraint::Eq(uid) | cedar_policy::ResourceConstraint::In(uid)
            if uid.type_name().to_string() == "Route" =>
        {
            Some(uid.id().unescaped().to_owned())
        }
        _ => None,
    };
    let mut general = PolicySet::new();
    let mut scoped: HashMap<String, Vec<Policy>> = HashMap::new();
    for p in set.policies() {
        match route_of(p) {
            Some(route) => scoped.entry(route).or_default().push(p.clone()),
            None => general.add(p.clone()).map_err(|e| e.to_string())?,
        }
    }
    let mut by_route = HashMap::new();
    for (route, policies) in scoped {
        let mut s = general.clone();
        for p in policies {
            s.add(p).map_err(|e| e.to_string())?;
        }
        by_route.insert(route, s);
    }
    Ok((general, by_route))
}

/// Which of the context values that vary between otherwise equal requests (the clock, the
/// address) a policy set can read, found by the words of its text: conservative, since a
/// word in a comment or string counts too, and a policy that uses `context` other than
/// through one attribute (`context.x`, `context["x"]`, `context has x`) counts as reading
/// them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reads {
    ip: bool,
    time: bool,
    hour: bool,
    weekday: bool,
}

impl Reads {
    fn of<'a>(texts: impl Iterator<Item = &'a str>) -> Self {
        let mut r = Self::default();
        for text in texts {
            let mut rest = text;
            while let Some((word, after)) = next_word(rest) {
                match word {
                    "ip" => r.ip = true,
                    "time" => r.time = true,
                    "hour" => r.hour = true,
                    "weekday" => r.weekday = true,
                    "context" => {
                        let next = after.trim_start();
                        let one_attribute = next.starts_with('.')
                            || next.starts_with('[')
                            || next.strip_prefix("has").is_some_and(|h| h.starts_with(char::is_whitespace));
                        if !one_attribute {
                            return Self { ip: true, time: true, hour: true, weekday: true };
                        }
                    }
                    _ => {}
                }
                rest = after;
            }
        }
        r
    }
}

/// The next identifier-like word of `text` and what follows it.
fn next_word(text: &str) -> Option<(&str, &str)> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let start = text.find(is_word)?;
    let rest = text.get(start..)?;
    let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
    Some((rest.get(..end)?, rest.get(end..)?))
}

fn has_parents(e: &Entity) -> bool {
    e.clone().into_inner().2.iter().next().is_some()
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What kind of caller the principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    Client,
    ApiKey,
    Anonymous,
}

impl PrincipalKind {
    fn type_name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Client => "Client",
            Self::ApiKey => "ApiKey",
            Self::Anonymous => "Anonymous",
        }
    }
}

/// The caller, from verified credentials only. (Unknown keys in a test case become
/// attributes, so no `deny_unknown_fields`.)
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Principal {
    #[serde(rename = "type")]
    pub kind: Option<PrincipalKind>,
    pub id: String,
    pub roles: Vec<String>,
    /// What the roles grant (`[authorization.roles]`), computed by the caller.
    pub permissions: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    /// Mapped claims (`tenant`, `department`, `groups`, …): strings, numbers, booleans or
    /// lists of strings.
    #[serde(flatten)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// The route and its path parameters (any other key of a test case is a parameter).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Resource {
    pub route: String,
    pub path: String,
    #[serde(flatten)]
    pub params: BTreeMap<String, String>,
}

/// The request's circumstances.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Circumstances {
    pub ip: Option<IpAddr>,
    /// Unix seconds.
    pub time: i64,
    pub mfa: bool,
    pub method: String,
}

impl Default for Circumstances {
    fn default() -> Self {
        Self { ip: None, time: 0, mfa: false, method: "GET".into() }
    }
}

/// One authorization question.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub principal: Principal,
    pub action: String,
    pub resource: Resource,
    pub context: Circumstances,
}

/// The answer, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Ids of the policies that determined the decision (for a deny with none: default
    /// deny).
    pub policies: Vec<String>,
    /// Policies that could not be evaluated for this request (e.g. a missing attribute);
    /// they count as not applying.
    pub errors: Vec<String>,
}

impl Verdict {
    /// The decision log (issue 5): every deny, and every allow when `log_allows`, as an
    /// audit event naming principal, action, resource, path and the deciding policies
    /// (`default-deny` when none permitted). Never the policy text.
    pub fn log(&self, query: &Query, log_allows: bool) {
        if self.allowed && !log_allows {
            return;
        }
        let kind = query.principal.kind.unwrap_or(PrincipalKind::Anonymous);
        let principal = format!("{kind:?}::{}", query.principal.id);
        let policies = if self.policies.is_empty() { "default-deny".to_owned() } else { self.policies.join(",") };
        let (action, resource, path) = (&query.action, &query.resource.route, &query.resource.path);
        if self.allowed {
            tracing::info!(
                target: "portcullis::audit", event = "authz.allowed", principal = %principal,
                action = %action, resource = %resource, path = %path, policies = %policies, "policy allowed"
            );
            return;
        }
        tracing::warn!(
            target: "portcullis::audit", event = "authz.denied", principal = %principal, action = %action,
            resource = %resource, path = %path, policies = %policies, errors = self.errors.len(), "policy denied"
        );
        for error in &self.errors {
            tracing::debug!(event = "authz.policy_error", error = %error, "a policy could not be evaluated");
        }
    }
}

/// The live policy set, swapped atomically on reload, with the decisions it has made.
#[derive(Debug)]
pub struct PolicyEngine {
    current: ArcSwap<Loaded>,
    authorizer: Authorizer,
}

/// A policy set and its remembered decisions (dropped with it on reload).
#[derive(Debug)]
struct Loaded {
    policies: Policies,
    decided: Mutex<HashMap<Vec<u8>, Arc<Verdict>>>,
}

/// The most decisions remembered; past it an arbitrary tenth is forgotten.
const MAX_REMEMBERED: usize = 20_000;

impl PolicyEngine {
    #[must_use]
    pub fn new(policies: Policies) -> Self {
        Self { current: ArcSwap::from_pointee(Loaded::new(policies)), authorizer: Authorizer::new() }
    }

    /// Puts a new policy set in place; requests in flight finish with the old one.
    pub fn replace(&self, policies: Policies) {
        self.current.store(Arc::new(Loaded::new(policies)));
    }

    /// Only builds the Cedar request and entities of `query` (for the benchmark's
    /// breakdown of where a decision's time goes).
    #[doc(hidden)]
    pub fn prepare_only(&self, query: &Query) -> bool {
        let loaded = self.current.load();
        build(query, &loaded.policies.actions, loaded.policies.reads.ip).is_ok()
    }

    /// Decides `query`. Anything that cannot be expressed (an id Cedar cannot hold, a bad
    /// attribute) denies, with the reason in `errors`.
    ///
    /// A decision is a pure function of the query and the policy set, so it is remembered
    /// under an exact encoding of everything Cedar sees ([`memo_key`]: the principal and
    /// its attributes, action, resource, and the context values the policies can read)
    /// and answered from memory when the same question comes again — typically every
    /// request after the first of a caller on a route. The clock's values are part of the
    /// key only when a policy reads them (`hour` for office hours, and so on).
    #[must_use]
    pub fn decide(&self, query: &Query) -> Arc<Verdict> {
        let loaded = self.current.load();
        let Some(key) = memo_key(query, loaded.policies.reads) else {
            return Arc::new(self.evaluate_with(&loaded.policies, query));
        };
        if let Ok(decided) = loaded.decided.lock()
            && let Some(verdict) = decided.get(&key)
        {
            return Arc::clone(verdict);
        }
        let verdict = Arc::new(self.evaluate_with(&loaded.policies, query));
        if let Ok(mut decided) = loaded.decided.lock() {
            crate::bounded::make_room(&mut decided, MAX_REMEMBERED, |_| false);
            decided.insert(key, Arc::clone(&verdict));
        }
        verdict
    }

    /// How many decisions are remembered.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.current.load().decided.lock().map_or(0, |d| d.len())
    }

    /// Decides `query` with Cedar, never from memory (what [`Self::decide`] remembers; the
    /// benchmark of one decision).
    #[must_use]
    pub fn evaluate(&self, query: &Query) -> Verdict {
        self.evaluate_with(&self.current.load().policies, query)
    }

    fn evaluate_with(&self, policies: &Policies, query: &Query) -> Verdict {
        match build(query, &policies.actions, policies.reads.ip) {
            Ok((request, entities)) => {
                let set = policies.for_route(&query.resource.route);
                let response = self.authorizer.is_authorized(&request, set, &entities);
                let diagnostics = response.diagnostics();
                Verdict {
                    allowed: response.decision() == Decision::Allow,
                    policies: diagnostics.reason().map(ToString::to_string).collect(),
                    errors: diagnostics.errors().map(one_line).collect(),
                }
            }
            Err(e) => deny(e),
        }
    }
}

impl Loaded {
    fn new(policies: Policies) -> Self {
        Self { policies, decided: Mutex::new(HashMap::new()) }
    }
}

/// An exact, unambiguous encoding (every part length-prefixed) of everything [`build`]
/// gives Cedar for `q`, leaving out only the clock and address values no policy reads:
/// equal keys mean equal Cedar requests and entities, so equal decisions.
fn memo_key(q: &Query, reads: Reads) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(256);
    let mut put = |bytes: &[u8]| {
        key.extend_from_slice(&bytes.len().to_le_bytes());
        key.extend_from_slice(bytes);
    };
    let p = &q.principal;
    put(p.kind.map_or("", PrincipalKind::type_name).as_bytes());
    put(p.id.as_bytes());
    for list in [&p.roles, &p.permissions, &p.scopes] {
        put(&list.len().to_le_bytes());
        list.iter().for_each(|item| put(item.as_bytes()));
    }
    put(p.client_id.as_deref().map_or(&[0][..], |c| c.as_bytes()));
    put(&[u8::from(p.client_id.is_some())]);
    // serde_json's output names a value exactly (distinct values, distinct text); no
    // attributes (the common case for clients) is the text `{}` without serialising.
    if p.attributes.is_empty() {
        put(b"{}");
    } else {
        put(serde_json::to_string(&p.attributes).ok()?.as_bytes());
    }
    put(q.action.as_bytes());
    put(q.resource.route.as_bytes());
    put(q.resource.path.as_bytes());
    put(&q.resource.params.len().to_le_bytes());
    for (k, v) in &q.resource.params {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    let c = &q.context;
    put(c.method.as_bytes());
    put(&[u8::from(c.mfa)]);
    if reads.ip {
        put(c.ip.map(|ip| ip.to_string()).unwrap_or_default().as_bytes());
    }
    if reads.time {
        put(&c.time.to_le_bytes());
    }
    if reads.hour {
        put(&(c.time.rem_euclid(86_400) / 3600).to_le_bytes());
    }
    if reads.weekday {
        put(&(c.time.div_euclid(86_400) + 3).rem_euclid(7).to_le_bytes());
    }
    Some(key)
}

/// The Cedar request and entities of `q` (the schema's `actions` included).
fn build(q: &Query, actions: &[Entity], with_ip: bool) -> Result<(Request, Entities), String> {
    let p = &q.principal;
    let kind = p.kind.unwrap_or(PrincipalKind::Anonymous);
    let principal_id = if kind == PrincipalKind::Anonymous { "anonymous" } else { p.id.as_str() };
    let principal = uid(kind.type_name(), principal_id)?;
    let roles = p.roles.iter().map(|r| uid("Role", r)).collect::<Result<Vec<_>, _>>()?;
    let parents: HashSet<EntityUid> = roles.iter().cloned().collect();
    let strings = |v: &[String]| RestrictedExpression::new_set(v.iter().cloned().map(RestrictedExpression::new_string));
    let mut attrs: HashMap<String, RestrictedExpression> = HashMap::new();
    for (name, value) in &p.attributes {
        if let Some(expr) = json_expr(value) {
            attrs.insert(name.clone(), expr);
        }
    }
    attrs.insert("id".into(), RestrictedExpression::new_string(p.id.clone()));
    attrs.insert("roles".into(), strings(&p.roles));
    attrs.insert("permissions".into(), strings(&p.permissions));
    attrs.insert("scopes".into(), strings(&p.scopes));
    attrs.insert("client_id".into(), RestrictedExpression::new_string(p.client_id.clone().unwrap_or_default()));
    let mut entities = vec![entity(principal.clone(), attrs, parents)?];
    entities.extend(roles.into_iter().map(|r| Entity::new_no_attrs(r, HashSet::new())));

    let resource = uid("Route", &q.resource.route)?;
    let mut rattrs: HashMap<String, RestrictedExpression> =
        q.resource.params.iter().map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))).collect();
    rattrs.insert("name".into(), RestrictedExpression::new_string(q.resource.route.clone()));
    rattrs.insert("path".into(), RestrictedExpression::new_string(q.resource.path.clone()));
    entities.push(entity(resource.clone(), rattrs, HashSet::new())?);

    let c = &q.context;
    let days = c.time.div_euclid(86_400);
    let mut context = vec![
        ("time".to_owned(), RestrictedExpression::new_long(c.time)),
        ("hour".to_owned(), RestrictedExpression::new_long(c.time.rem_euclid(86_400) / 3600)),
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        ("weekday".to_owned(), RestrictedExpression::new_long((days + 3).rem_euclid(7))),
        ("mfa".to_owned(), RestrictedExpression::new_bool(c.mfa)),
        ("authenticated".to_owned(), RestrictedExpression::new_bool(kind != PrincipalKind::Anonymous)),
        ("client_id".to_owned(), RestrictedExpression::new_string(p.client_id.clone().unwrap_or_default())),
        ("scopes".to_owned(), strings(&p.scopes)),
        ("method".to_owned(), RestrictedExpression::new_string(c.method.clone())),
    ];
    if with_ip {
        let ip = c.ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        context.push(("ip".to_owned(), RestrictedExpression::new_ip(ip)));
    }
    let context = Context::from_pairs(context).map_err(|e| format!("context: {e}"))?;
    let action = uid("Action", &q.action)?;
    let request = Request::new(principal, action, resource, context, None).map_err(|e| format!("request: {e}"))?;
    entities.extend(actions.iter().cloned());
    let entities = Entities::from_entities(entities, None).map_err(|e| format!("entities: {e}"))?;
    Ok((request, entities))
}

fn deny(error: String) -> Verdict {
    Verdict { allowed: false, policies: Vec::new(), errors: vec![error] }
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    // Parsing a type name runs Cedar's parser (microseconds); the few we use are parsed
    // once.
    static TYPES: std::sync::OnceLock<HashMap<&'static str, EntityTypeName>> = std::sync::OnceLock::new();
    let types = TYPES.get_or_init(|| {
        ["User", "Client", "ApiKey", "Anonymous", "Role", "Route", "Action"]
            .into_iter()
            .filter_map(|t| EntityTypeName::from_str(t).ok().map(|n| (t, n)))
            .collect()
    });
    let name = match types.get(kind) {
        Some(name) => name.clone(),
        None => EntityTypeName::from_str(kind).map_err(|e| format!("entity type {kind}: {e}"))?,
    };
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn entity(
    uid: EntityUid,
    attrs: HashMap<String, RestrictedExpression>,
    parents: HashSet<EntityUid>,
) -> Result<Entity, String> {
    Entity::new(uid, attrs, parents).map_err(|e| format!("entity: {e}"))
}

/// A claim as a Cedar value: strings, integers, booleans, and lists of those.
fn json_expr(value: &serde_json::Value) -> Option<RestrictedExpression> {
    Some(match value {
        serde_json::Value::String(s) => RestrictedExpression::new_string(s.clone()),
        serde_json::Value::Bool(b) => RestrictedExpression::new_bool(*b),
        serde_json::Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        serde_json::Value::Array(items) => RestrictedExpression::new_set(items.iter().filter_map(json_expr)),
        _ => return None,
    })
}

/// Whether an `amr` claim (RFC 8176) says a second factor was used.
#[must_use]
pub fn amr_has_mfa(amr: Option<&serde_json::Value>) -> bool {
    let Some(serde_json::Value::Array(methods)) = amr else { return false };
    methods
        .iter()
        .filter_map(serde_json::Value::as_str)
        .any(|m| matches!(m, "mfa" | "otp" | "hwk" | "swk" | "sms" | "fido"))
}

/// Extracts the parameters of `pattern` (`/users/{id}/invoices/{invoice}`) from `path`:
/// `None` when the path does not fit the pattern (segment-wise; trailing segments beyond
/// the pattern are allowed).
#[must_use]
pub fn path_params(pattern: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    for want in pattern.split('/').filter(|s| !s.is_empty()) {
        let got = segments.next()?;
        match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) => {
                params.insert(name.to_owned(), got.to_owned());
            }
            None if want.eq_ignore_ascii_case(got) => {}
            None => return None,
        }
    }
    Some(params)
}

/// The permissions `roles` grant under a role → permissions map (RBAC), sorted.
#[must_use]
pub fn permissions_of(map: &HashMap<String, Vec<String>>, roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = roles.iter().filter_map(|r| map.get(r)).flatten().cloned().collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

    #[test]
    fn path_parameters() {
        let p = path_params("/users/{id}/invoices/{invoice}", "/users/42/invoices/7").unwrap_or_default();
        assert_eq!(p.get("id").map(String::as_str), Some("42"));
        assert_eq!(p.get("invoice").map(String::as_str), Some("7"));
        assert!(path_params("/users/{id}", "/groups/1").is_none());
        assert!(path_params("/users/{id}", "/users").is_none());
        assert!(path_params("/users/{id}", "/users/1/more").is_some());
    }

    #[test]
    fn weekday_and_hour() {
        // 2026-12-02 is a Wednesday; 10:30 UTC.
        let t = 1_796_207_400;
        let engine = PolicyEngine::new(
            Policies::load(
                &[(
                    "t.cedar".into(),
                    "@id(\"wed\") permit(principal, action, resource) when { context.weekday == 2 && context.hour == 10 };"
                        .into(),
                )],
                SCHEMA,
            )
            .unwrap_or_else(|e| unreachable!("{e:?}")),
        );
        let q = Query {
            principal: Principal { kind: Some(PrincipalKind::User), id: "a".into(), ..Principal::default() },
            action: "GET".into(),
            resource: Resource { route: "r".into(), path: "/".into(), ..Resource::default() },
            context: Circumstances { time: t, ..Circumstances::default() },
        };
        let v = engine.decide(&q);
        assert!(v.allowed, "{v:?}");
        assert_eq!(v.policies, vec!["wed".to_owned()]);
    }

    #[test]
    fn policies_on_the_address_see_it() {
        let text =
            "@id(\"office\") permit(principal, action, resource) when { context.ip.isInRange(ip(\"10.0.0.0/8\")) };";
        let policies =
            Policies::load(&[("o.cedar".into(), text.into())], SCHEMA).unwrap_or_else(|e| unreachable!("{e:?}"));
        assert!(policies.reads.ip);
        let engine = PolicyEngine::new(policies);
        let mut q = Query {
            principal: Principal { kind: Some(PrincipalKind::User), id: "a".into(), ..Principal::default() },
            action: "GET".into(),
            resource: Resource { route: "r".into(), path: "/".into(), ..Resource::default() },
            context: Circumstances { ip: Some([10, 1, 2, 3].into()), ..Circumstances::default() },
        };
        assert!(engine.decide(&q).allowed);
        q.context.ip = Some([192, 0, 2, 1].into());
        assert!(!engine.decide(&q).allowed);
        let principal_only = "permit(principal is User, action, resource) when { principal.id == \"a\" };";
        let p = Policies::load(&[("p.cedar".into(), principal_only.into())], SCHEMA)
            .unwrap_or_else(|e| unreachable!("{e:?}"));
        assert!(!p.reads.ip, "\"principal\" is not \"ip\"");
    }

    fn engine(text: &str) -> PolicyEngine {
        PolicyEngine::new(
            Policies::load(&[("t.cedar".into(), text.into())], SCHEMA).unwrap_or_else(|e| unreachable!("{e:?}")),
        )
    }

    fn user(id: &str, time: i64) -> Query {
        Query {
            principal: Principal { kind: Some(PrincipalKind::User), id: id.into(), ..Principal::default() },
            action: "GET".into(),
            resource: Resource { route: "r".into(), path: "/".into(), ..Resource::default() },
            context: Circumstances { time, ..Circumstances::default() },
        }
    }

    #[test]
    fn what_policies_read_of_the_context() {
        let reads = |text: &str| Reads::of([text].into_iter());
        assert_eq!(reads("permit(principal, action, resource);"), Reads::default());
        let hours = reads("permit(principal, action, resource) when { context.hour >= 9 && context has mfa };");
        assert_eq!(hours, Reads { hour: true, ..Reads::default() });
        assert!(reads(r#"forbid(principal, action, resource) when { context["weekday"] > 4 };"#).weekday);
        assert!(reads("permit(principal, action, resource) when { principal.datetime == 1 };") == Reads::default());
        let all = Reads { ip: true, time: true, hour: true, weekday: true };
        assert_eq!(reads("permit(principal, action, resource) when { context == {} };"), all, "the whole record");
        assert_eq!(reads("permit(principal, action, resource) when { principal.context == \"x\" };"), all);
    }

    #[test]
    fn remembered_decisions_follow_everything_the_policies_read() {
        // 2026-12-02 10:30 UTC and 20:30 UTC.
        let (morning, evening) = (1_796_207_400, 1_796_207_400 + 10 * 3600);
        let e = engine(
            r#"@id("office") permit(principal, action, resource) when { context.hour >= 9 && context.hour < 17 };
               @id("alice") forbid(principal is User, action, resource) when { principal.id == "alice" };"#,
        );
        assert!(e.decide(&user("bob", morning)).allowed);
        assert!(e.decide(&user("bob", morning + 59)).allowed);
        assert_eq!(e.remembered(), 1, "the same hour is the same question: time itself is not read");
        let late = e.decide(&user("bob", evening));
        assert!(!late.allowed, "another hour is another question");
        assert_eq!(*late, e.evaluate(&user("bob", evening)));
        let alice = e.decide(&user("alice", morning));
        assert!(!alice.allowed && alice.policies == vec!["alice".to_owned()], "{alice:?}");
        let mut tenant = user("bob", morning);
        tenant.principal.attributes.insert("tenant".into(), serde_json::json!("acme"));
        tenant.resource.path = "/other".into();
        assert!(e.decide(&tenant).allowed);
        assert_eq!(e.remembered(), 4);

        // A reload forgets every decision the old set made.
        e.replace(
            Policies::load(&[("d.cedar".into(), "@id(\"none\") forbid(principal, action, resource);".into())], SCHEMA)
                .unwrap_or_else(|e| unreachable!("{e:?}")),
        );
        assert_eq!(e.remembered(), 0);
        assert!(!e.decide(&user("bob", morning)).allowed);
    }

    #[test]
    fn remembered_decisions_follow_the_address_when_read() {
        let e = engine(r#"permit(principal, action, resource) when { context.ip.isInRange(ip("10.0.0.0/8")) };"#);
        let mut q = user("a", 0);
        q.context.ip = Some([10, 1, 2, 3].into());
        assert!(e.decide(&q).allowed);
        q.context.ip = Some([192, 0, 2, 1].into());
        assert!(!e.decide(&q).allowed);
        q.context.ip = Some([10, 1, 2, 3].into());
        assert!(e.decide(&q).allowed);
        assert_eq!(e.remembered(), 2);
    }

    #[test]
    fn keys_are_unambiguous() {
        let mut a = user("ab", 0);
        a.principal.roles = vec!["c".into()];
        let mut b = user("a", 0);
        b.principal.roles = vec!["bc".into()];
        assert_ne!(memo_key(&a, Reads::default()), memo_key(&b, Reads::default()));
        let mut c = user("a", 0);
        c.principal.roles = vec!["x".into()];
        let mut d = user("a", 0);
        d.principal.permissions = vec!["x".into()];
        assert_ne!(memo_key(&c, Reads::default()), memo_key(&d, Reads::default()));
        // No attributes is keyed as their serialisation would be, and differs from any.
        let mut e = user("a", 0);
        let plain = memo_key(&e, Reads::default());
        e.principal.attributes.insert("tenant".into(), serde_json::json!("t1"));
        assert_ne!(plain, memo_key(&e, Reads::default()));
        e.principal.attributes.clear();
        assert_eq!(serde_json::to_string(&e.principal.attributes).ok().as_deref(), Some("{}"));
        assert_eq!(plain, memo_key(&e, Reads::default()));
    }

    #[test]
    fn invalid_policies_are_refused_with_their_file() {
        let bad =
            [("a.cedar".to_owned(), "permit(principal, action, resource) when { principal.nosuch == 1 };".to_owned())];
        let errors = Policies::load(&bad, SCHEMA).err().unwrap_or_default();
        assert!(errors.iter().any(|e| e.starts_with("a.cedar")), "{errors:?}");
        let syntax = [("b.cedar".to_owned(), "permit(principal,".to_owned())];
        assert!(Policies::load(&syntax, SCHEMA).is_err());
    }
}
