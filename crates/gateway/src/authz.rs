//! Policy decisions on the gateway: the verified identity, the route and its path
//! parameters, and the request's circumstances become a Cedar query
//! ([`domain::policy::Query`]); a deny is a 403 with a reason code, and every deny (every
//! allow too, with `log_allows`) is a decision-log audit event naming the policies.
//!
//! Only verified facts go in: attributes come from the verified token (mapped claims),
//! the API key or the certificate; resource parameters from the normalised path; the
//! address from the transport. Headers and the query string never reach a policy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use domain::policy::{Circumstances, PolicyEngine, Principal, PrincipalKind, Query, Resource};

use crate::apikey::API_KEY_ISSUER;
use crate::auth::{Identity, MTLS_ISSUER};
use crate::error::{Downstream, GatewayError};
use crate::routes::Route;

/// Role-based permissions and the Cedar engine.
#[derive(Debug, Default, Clone)]
pub struct Authz {
    /// Role → permissions (`[authorization.roles]`).
    pub permissions: HashMap<String, Vec<String>>,
    /// Cedar policies, when `[authorization] policies_dir` is set.
    pub engine: Option<Arc<PolicyEngine>>,
    /// Log allows as well as denies.
    pub log_allows: bool,
}

impl Authz {
    /// The permissions `roles` grant.
    #[must_use]
    pub fn permissions_of(&self, roles: &[String]) -> Vec<String> {
        domain::policy::permissions_of(&self.permissions, roles)
    }

    /// Asks the policies about this request, when the route is under them.
    ///
    /// # Errors
    /// `PolicyDenied`.
    pub fn check(&self, route: &Route, identity: Option<&Identity>, facts: &Facts<'_>) -> Result<(), GatewayError> {
        let Some(engine) = self.engine.as_ref().filter(|_| route.cfg.policies) else { return Ok(()) };
        let mut query = query(route, identity, facts);
        query.principal.permissions = self.permissions_of(&query.principal.roles);
        let verdict = engine.decide(&query);
        verdict.log(&query, self.log_allows);
        if verdict.allowed {
            return Ok(());
        }
        Err(GatewayError::Downstream(Downstream::PolicyDenied))
    }
}

/// What the gateway knows of a request besides the caller.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a str,
    /// The normalised path.
    pub path: &'a str,
    pub ip: Option<IpAddr>,
    pub now: i64,
}

/// The Cedar query of a gateway request.
#[must_use]
pub fn query(route: &Route, identity: Option<&Identity>, facts: &Facts<'_>) -> Query {
    let Facts { method, path, ip, now } = *facts;
    let principal = identity.map_or_else(Principal::default, |id| {
        let (kind, principal_id) = if id.issuer == API_KEY_ISSUER {
            (PrincipalKind::ApiKey, id.subject.strip_prefix("apikey:").unwrap_or(&id.subject).to_owned())
        } else if id.issuer == MTLS_ISSUER || id.client_id.as_deref() == Some(id.subject.as_str()) {
            (PrincipalKind::Client, id.subject.clone())
        } else {
            (PrincipalKind::User, id.subject.clone())
        };
        Principal {
            kind: Some(kind),
            id: principal_id,
            roles: id.roles.clone(),
            permissions: Vec::new(),
            scopes: id.scopes.clone(),
            client_id: id.client_id.clone(),
            attributes: id.attributes.clone(),
        }
    });
    let params = route
        .cfg
        .path_pattern
        .as_deref()
        .and_then(|pattern| domain::policy::path_params(pattern, path))
        .unwrap_or_default();
    let action = route.cfg.actions.get(method).cloned().unwrap_or_else(|| method.to_owned());
    Query {
        principal,
        action,
        resource: Resource { route: route.name.clone(), path: path.to_owned(), params },
        context: Circumstances { ip, time: now, mfa: identity.is_some_and(|i| i.mfa), method: method.to_owned() },
    }
}
