//! The admin API's OpenAPI 3.1 document, served at `/admin/openapi.json`. Built from one
//! table beside `admin_api::ROUTES` (a test checks that both list the same routes).

use serde_json::{Map, Value, json};

/// (method, path, summary, request body schema or null, success description).
const OPERATIONS: [(&str, &str, &str, Option<&str>); 38] = [
    ("GET", "/admin/clients", "List clients", None),
    ("POST", "/admin/clients", "Register a client; the secret is in this response only", Some("CreateClient")),
    ("GET", "/admin/clients/{id}", "Show one client", None),
    ("DELETE", "/admin/clients/{id}", "Delete a client and revoke its grants", None),
    ("POST", "/admin/clients/{id}/disable", "Refuse all further requests of a client", None),
    ("POST", "/admin/clients/{id}/enable", "Re-enable a disabled client", None),
    ("POST", "/admin/clients/{id}/rotate-secret", "Issue a new secret (the old one stops working)", None),
    ("GET", "/admin/users", "List users", None),
    ("POST", "/admin/users", "Create a user (password: 12+ characters, stored as argon2id)", Some("CreateUser")),
    ("GET", "/admin/users/{username}", "Show one user", None),
    ("DELETE", "/admin/users/{username}", "Delete a user with their sessions, consents and grants", None),
    ("POST", "/admin/users/{username}/disable", "Refuse the user's sign-ins; end every session and grant", None),
    ("POST", "/admin/users/{username}/enable", "Allow the user to sign in again", None),
    ("PUT", "/admin/users/{username}/roles", "Add and remove roles", Some("RoleChange")),
    ("GET", "/admin/users/{username}/sessions", "A user's sessions (signed-in browsers)", None),
    (
        "PUT",
        "/admin/users/{username}/password",
        "Set a new password; ends the user's sessions and grants",
        Some("NewPassword"),
    ),
    ("GET", "/admin/users/{username}/consents", "The clients the user has consented to", None),
    ("DELETE", "/admin/users/{username}/consents/{client_id}", "Withdraw a consent (the page shows again)", None),
    ("GET", "/admin/keys", "Signing keys and their states", None),
    ("POST", "/admin/keys/rotate", "Announce a successor signing key", None),
    ("POST", "/admin/keys/{kid}/retire", "Retire a key now (published until its tokens expire)", None),
    ("GET", "/admin/apikeys", "List API keys (never the keys themselves)", None),
    ("POST", "/admin/apikeys", "Create an API key; the key is in this response only", Some("CreateApiKey")),
    ("GET", "/admin/apikeys/{id}", "Show one API key's metadata", None),
    ("POST", "/admin/apikeys/{id}/revoke", "Revoke an API key now", None),
    (
        "POST",
        "/admin/apikeys/{id}/rotate",
        "Issue a successor (shown once); the old key stays valid for the overlap",
        Some("Rotation"),
    ),
    ("GET", "/admin/bans", "IP bans in force", None),
    ("POST", "/admin/bans", "Ban an address now", Some("Ban")),
    ("DELETE", "/admin/bans/{ip}", "Lift the ban of an address", None),
    ("POST", "/admin/policies/validate", "Validate the policy directory on disk against its schema", None),
    ("POST", "/admin/policies/test", "Run a table of expected policy decisions", Some("PolicyCases")),
    (
        "POST",
        "/admin/policies/reload",
        "Reload the policy directory now (422 with its problems if it does not validate; the previous set stays)",
        None,
    ),
    (
        "POST",
        "/admin/incidents/revoke-user",
        "Revoke every session, refresh and access token of a user; optionally disable them",
        Some("RevokeUser"),
    ),
    (
        "POST",
        "/admin/incidents/revoke-client",
        "Disable a client and revoke every token issued to it",
        Some("RevokeClient"),
    ),
    (
        "POST",
        "/admin/incidents/revoke-key",
        "Purge a compromised signing key: every token it signed is refused at once",
        Some("RevokeKey"),
    ),
    ("POST", "/admin/incidents/revoke-apikeys", "Revoke every API key of an owner", Some("RevokeApiKeys")),
    ("GET", "/admin/audit/head", "The audit chain's last sequence number and hash", None),
    ("GET", "/admin/audit", "Search the audit trail (query: subject, event, since, until, limit)", None),
];

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

fn operation(method: &str, path: &str, summary: &str, body: Option<&str>) -> Value {
    let mut op = json!({
        "summary": summary,
        "operationId": format!("{}{}", method.to_lowercase(), path.replace(['/', '{', '}', '-'], "_")),
        "security": [{ "bearer": [if method == "GET" { "portcullis:admin:read" } else { "portcullis:admin" }] }],
        "parameters": parameters(path),
        "responses": {
            "200": { "description": "Done", "content": { "application/json": { "schema": {} } } },
            "201": { "description": "Created (POST /admin/clients, /admin/users, /admin/apikeys, /admin/bans)",
                "content": { "application/json": { "schema": {} } } },
            "400": { "$ref": "#/components/responses/Problem" },
            "401": { "description": "No valid bearer token (WWW-Authenticate: Bearer error=\"invalid_token\")" },
            "403": { "description": "The token lacks the scope (error=\"insufficient_scope\")" },
            "404": { "$ref": "#/components/responses/Problem" },
            "409": { "$ref": "#/components/responses/Problem" },
            "503": { "$ref": "#/components/responses/Problem" }
        }
    });
    if let (Some(schema), Some(obj)) = (body, op.as_object_mut()) {
        obj.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
        );
    }
    op
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties })
}

/// The document.
#[must_use]
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body) in OPERATIONS {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        if let Some(item) = entry.as_object_mut() {
            item.insert(method.to_lowercase(), operation(method, path, summary, body));
        }
    }
    let string = json!({ "type": "string" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let boolean = json!({ "type": "boolean" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portcullis admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The CLI's operations over HTTP on the admin listener. Bearer tokens issued by this \
                Portcullis, with the admin audience and scope ([admin] in the configuration). Every call is \
                an audit event naming the token's subject as actor."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "responses": {
                "Problem": { "description": "RFC 9457 problem details",
                    "content": { "application/problem+json": { "schema": { "type": "object" } } } }
            },
            "schemas": {
                "CreateClient": object(&["name", "grants"], json!({
                    "name": string, "grants": strings, "scope": string, "default_scope": string,
                    "audiences": strings, "redirect_uris": strings, "post_logout_redirect_uris": strings,
                    "public": boolean, "first_party": boolean, "token_ttl": { "type": "integer", "minimum": 1 },
                    "dpop_bound": boolean, "tls_client_auth_subject": string })),
                "CreateUser": object(&["username", "password"], json!({
                    "username": string, "password": { "type": "string", "minLength": 12 }, "email": string,
                    "email_verified": boolean, "name": string, "roles": strings, "groups": strings,
                    "attributes": { "type": "object" } })),
                "RoleChange": object(&[], json!({ "add": strings, "remove": strings })),
                "CreateApiKey": object(&["name"], json!({
                    "name": string, "scopes": string, "roles": strings, "expires": string, "owner": string })),
                "Ban": object(&["ip"], json!({ "ip": string, "for": string })),
                "NewPassword": object(&["password"], json!({ "password": { "type": "string", "minLength": 12 } })),
                "Rotation": object(&[], json!({ "overlap": string })),
                "PolicyCases": { "type": "object", "required": ["case"],
                    "description": "The `policy test --file` format as JSON: { roles?, case: [{ name, principal, action, resource, context?, expect, policies? }] }" },
                "RevokeUser": object(&["username"], json!({ "username": string, "disable": { "type": "boolean" } })),
                "RevokeClient": object(&["client_id"], json!({ "client_id": string })),
                "RevokeKey": object(&["kid"], json!({ "kid": string })),
                "RevokeApiKeys": object(&["owner"], json!({ "owner": string }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        let documented: Vec<(&str, &str)> = OPERATIONS.iter().map(|(m, p, _, _)| (*m, *p)).collect();
        assert_eq!(documented, crate::admin_api::ROUTES.to_vec());
        let doc = document();
        for (method, path) in crate::admin_api::ROUTES {
            assert!(doc["paths"][path][method.to_lowercase()].is_object(), "{method} {path}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
