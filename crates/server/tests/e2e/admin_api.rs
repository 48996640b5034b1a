//! The admin API on the admin listener: OpenAPI document, bearer tokens with the admin
//! audience and scope (read-only scope for GETs), RFC 6750 challenges, problem+json errors,
//! and an incident operation whose effect and audit record (actor = the token's subject)
//! are checked.

use std::time::Duration;

use crate::harness::{Instance, Server, eventually, http, introspect, token};

fn admin_client(instance: &Instance, scope: &str) -> (String, String) {
    instance.create_client(scope, "portcullis-admin")
}

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let url = format!("{}{path}", server.admin.as_deref().expect("admin listening"));
    let mut req = http().request(method.parse().unwrap(), url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn admin_api_needs_the_admin_scope_and_runs_incident_commands() {
    let instance = Instance::new();
    let (ops, ops_secret) = admin_client(&instance, "portcullis:admin");
    let (reader, reader_secret) = admin_client(&instance, "portcullis:admin:read");
    let (victim, victim_secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    let admin_token = token(&server, &ops, &ops_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let read_token = token(&server, &reader, &reader_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let victim_token = token(&server, &victim, &victim_secret, None).await["access_token"].as_str().unwrap().to_owned();

    let doc: serde_json::Value = call(&server, "GET", "/admin/openapi.json", None, None).await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/admin/incidents/revoke-client"]["post"].is_object());

    let none = call(&server, "GET", "/admin/clients", None, None).await;
    assert_eq!(none.status(), 401);
    assert!(challenge(&none).contains("error=\"invalid_token\""), "{}", challenge(&none));
    assert_eq!(call(&server, "GET", "/admin/clients", Some("garbage"), None).await.status(), 401);
    let wrong_audience = call(&server, "GET", "/admin/clients", Some(&victim_token), None).await;
    assert_eq!(wrong_audience.status(), 401, "a token for another audience is refused");

    let listed = call(&server, "GET", "/admin/clients", Some(&read_token), None).await;
    assert_eq!(listed.status(), 200);
    let clients: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(clients.as_array().unwrap().len(), 3);
    assert!(!clients.to_string().contains(&victim_secret), "never a secret");
    let forbidden = call(&server, "POST", "/admin/keys/rotate", Some(&read_token), None).await;
    assert_eq!(forbidden.status(), 403, "the read scope cannot change anything");
    assert!(challenge(&forbidden).contains("insufficient_scope"));

    let missing = call(&server, "GET", "/admin/clients/no-such-client", Some(&admin_token), None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let bad =
        call(&server, "POST", "/admin/incidents/revoke-client", Some(&admin_token), Some(serde_json::json!({"id": 1})))
            .await;
    assert_eq!(bad.status(), 400, "a body of the wrong shape is a problem, not a 5xx");
    assert_eq!(call(&server, "DELETE", "/admin/bans/not-an-ip", Some(&admin_token), None).await.status(), 400);

    let body = serde_json::json!({ "client_id": victim });
    let revoked = call(&server, "POST", "/admin/incidents/revoke-client", Some(&admin_token), Some(body)).await;
    assert_eq!(revoked.status(), 200);
    eventually(Duration::from_secs(5), "the client's token is still active", || async {
        introspect(&server, &reader, &reader_secret, &victim_token).await["active"] == false
    })
    .await;
    let audit = instance.cli(&["audit", "search", "--event", "incident.client_revoked", "--json"]);
    let record: serde_json::Value =
        serde_json::from_str(audit.stdout.lines().next().expect("an audit record")).unwrap();
    assert_eq!(record["fields"]["actor"], format!("token:{ops}"), "the operator is the token's subject");
    assert_eq!(record["fields"]["remote_addr"], "127.0.0.1", "and from where");
    assert_eq!(record["fields"]["client_id"], victim.as_str());

    // An admin token is revocable like any other: revoking its own client locks it out.
    let body = serde_json::json!({ "client_id": ops });
    assert_eq!(
        call(&server, "POST", "/admin/incidents/revoke-client", Some(&admin_token), Some(body)).await.status(),
        200
    );
    eventually(Duration::from_secs(5), "a revoked admin token still works", || async {
        call(&server, "GET", "/admin/clients", Some(&admin_token), None).await.status() == 401
    })
    .await;
}

#[tokio::test]
async fn admin_api_creates_and_changes_what_the_cli_does() {
    let instance = Instance::new();
    let (ops, ops_secret) = admin_client(&instance, "portcullis:admin");
    let (reader, reader_secret) = admin_client(&instance, "portcullis:admin:read");
    let server = instance.serve();
    let t = token(&server, &ops, &ops_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let read = token(&server, &reader, &reader_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let t = Some(t.as_str());

    // A client, its secret once; the secret works at the token endpoint; rotation.
    let body = serde_json::json!({ "name": "billing", "grants": ["client_credentials"], "scope": "invoices:read",
        "audiences": ["https://api.example.com"] });
    let made = call(&server, "POST", "/admin/clients", t, Some(body)).await;
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    let (id, secret) =
        (made["client_id"].as_str().unwrap().to_owned(), made["client_secret"].as_str().unwrap().to_owned());
    crate::harness::remember(&secret);
    assert_eq!(token(&server, &id, &secret, None).await["token_type"], "Bearer");
    let rotated: serde_json::Value =
        call(&server, "POST", &format!("/admin/clients/{id}/rotate-secret"), t, None).await.json().await.unwrap();
    crate::harness::remember(rotated["client_secret"].as_str().unwrap());
    assert_ne!(rotated["client_secret"], secret.as_str());
    let bad = serde_json::json!({ "name": "x", "grants": ["password"] });
    assert_eq!(call(&server, "POST", "/admin/clients", t, Some(bad)).await.status(), 400, "no password grant");
    assert_eq!(call(&server, "DELETE", &format!("/admin/clients/{id}"), t, None).await.status(), 200);
    assert_eq!(call(&server, "GET", &format!("/admin/clients/{id}"), t, None).await.status(), 404);

    // A user: created, roles changed, disabled, enabled, deleted; a short password refused.
    let user = serde_json::json!({ "username": "dora", "password": crate::harness::PASSWORD, "roles": ["viewer"] });
    assert_eq!(call(&server, "POST", "/admin/users", Some(&read), Some(user.clone())).await.status(), 403);
    assert_eq!(call(&server, "POST", "/admin/users", t, Some(user.clone())).await.status(), 201);
    assert_eq!(call(&server, "POST", "/admin/users", t, Some(user)).await.status(), 400, "the name is taken");
    let weak = serde_json::json!({ "username": "eve", "password": "short" });
    assert_eq!(call(&server, "POST", "/admin/users", t, Some(weak)).await.status(), 400);
    let roles = serde_json::json!({ "add": ["admin"], "remove": ["viewer"] });
    let changed: serde_json::Value =
        call(&server, "PUT", "/admin/users/dora/roles", t, Some(roles)).await.json().await.unwrap();
    assert_eq!(changed["roles"], serde_json::json!(["admin"]));
    let new_password = serde_json::json!({ "password": "another long passphrase" });
    crate::harness::remember("another long passphrase");
    assert_eq!(call(&server, "PUT", "/admin/users/dora/password", t, Some(new_password)).await.status(), 200);
    let short = serde_json::json!({ "password": "short" });
    assert_eq!(call(&server, "PUT", "/admin/users/dora/password", t, Some(short)).await.status(), 400);
    let consents: serde_json::Value =
        call(&server, "GET", "/admin/users/dora/consents", t, None).await.json().await.unwrap();
    assert_eq!(consents, serde_json::json!([]));
    assert_eq!(call(&server, "DELETE", "/admin/users/dora/consents/some-client", t, None).await.status(), 404);
    let disabled: serde_json::Value =
        call(&server, "POST", "/admin/users/dora/disable", t, None).await.json().await.unwrap();
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(call(&server, "POST", "/admin/users/dora/enable", t, None).await.status(), 200);
    assert_eq!(call(&server, "DELETE", "/admin/users/dora", t, None).await.status(), 200);
    assert_eq!(call(&server, "GET", "/admin/users/dora", t, None).await.status(), 404);

    // An API key, shown once, then revoked; a ban added and lifted; a successor key retired.
    let key = serde_json::json!({ "name": "ci", "scopes": "reports:read", "owner": "team-ci", "expires": "30d" });
    let key: serde_json::Value = call(&server, "POST", "/admin/apikeys", t, Some(key)).await.json().await.unwrap();
    crate::harness::remember(key["api_key"].as_str().unwrap());
    assert_eq!(key["owner"], "team-ci");
    let revoked: serde_json::Value =
        call(&server, "POST", &format!("/admin/apikeys/{}/revoke", key["id"].as_str().unwrap()), t, None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(revoked["state"], "revoked");
    let again = call(
        &server,
        "POST",
        &format!("/admin/apikeys/{}/rotate", key["id"].as_str().unwrap()),
        t,
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(again.status(), 400, "a revoked key does not rotate");
    let live = serde_json::json!({ "name": "deploy", "owner": "team-ci" });
    let live: serde_json::Value = call(&server, "POST", "/admin/apikeys", t, Some(live)).await.json().await.unwrap();
    crate::harness::remember(live["api_key"].as_str().unwrap());
    let live_id = live["id"].as_str().unwrap();
    let rotated = call(
        &server,
        "POST",
        &format!("/admin/apikeys/{live_id}/rotate"),
        t,
        Some(serde_json::json!({ "overlap": "1h" })),
    )
    .await;
    assert_eq!(rotated.status(), 201);
    let rotated: serde_json::Value = rotated.json().await.unwrap();
    crate::harness::remember(rotated["api_key"].as_str().unwrap());
    assert_eq!(rotated["rotated_from"], live_id);
    let shown: serde_json::Value =
        call(&server, "GET", &format!("/admin/apikeys/{live_id}"), t, None).await.json().await.unwrap();
    assert!(shown.get("api_key").is_none(), "never the key itself: {shown}");
    let ban = serde_json::json!({ "ip": "203.0.113.50", "for": "1h" });
    assert_eq!(call(&server, "POST", "/admin/bans", t, Some(ban)).await.status(), 201);
    let bans: serde_json::Value = call(&server, "GET", "/admin/bans", t, None).await.json().await.unwrap();
    assert_eq!(bans[0]["ip"], "203.0.113.50");
    assert_eq!(call(&server, "DELETE", "/admin/bans/203.0.113.50", t, None).await.status(), 200);
    assert_eq!(call(&server, "DELETE", "/admin/bans/203.0.113.50", t, None).await.status(), 404, "not banned any more");
    let successor: serde_json::Value = call(&server, "POST", "/admin/keys/rotate", t, None).await.json().await.unwrap();
    let kid = successor["kid"].as_str().unwrap();
    assert_eq!(call(&server, "POST", "/admin/keys/rotate", t, None).await.status(), 409, "one successor at a time");
    assert_eq!(call(&server, "POST", &format!("/admin/keys/{kid}/retire"), t, None).await.status(), 200);
    assert_eq!(call(&server, "POST", "/admin/keys/no-such-kid/retire", t, None).await.status(), 404);
    let cases = serde_json::json!({ "case": [] });
    let no_policies = call(&server, "POST", "/admin/policies/test", t, Some(cases)).await;
    assert_eq!(no_policies.status(), 400, "no policy directory configured");
    assert_eq!(call(&server, "POST", "/admin/policies/validate", t, None).await.status(), 400);
    assert_eq!(call(&server, "POST", "/admin/policies/reload", t, None).await.status(), 400);

    let searched = call(&server, "GET", "/admin/audit?event=admin.user.&limit=50", t, None).await;
    assert_eq!(searched.status(), 200);
    let searched: serde_json::Value = searched.json().await.unwrap();
    assert!(searched.as_array().unwrap().iter().any(|r| r["event"] == "admin.user.password_set"), "{searched}");
    assert_eq!(call(&server, "GET", "/admin/audit?since=someday", t, None).await.status(), 400);
    assert_eq!(call(&server, "GET", "/admin/audit?bogus=1", t, None).await.status(), 400);
    let audit = instance.cli(&["audit", "search", "--event", "admin.", "--json"]);
    let actors: Vec<serde_json::Value> = audit
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"]["actor"].clone())
        .collect();
    let by_api = actors.iter().filter(|a| **a == format!("token:{ops}")).count();
    assert!(by_api >= 10, "every change is audited with the token's subject as actor ({by_api}): {actors:?}");
}

#[tokio::test]
async fn with_a_client_ca_the_admin_listener_wants_a_certificate_and_a_token() {
    use crate::mtls::{ca, client_identity, https};
    let instance = Instance::new();
    let tls_dir = instance.data_dir().join("certs");
    assert_eq!(instance.cli(&["tls", "dev-cert", "--out", tls_dir.to_str().unwrap()]).status, 0);
    let operators = ca("Operators CA");
    let strangers = ca("Another CA");
    let ca_file = instance.data_dir().join("operators-ca.pem");
    std::fs::write(&ca_file, &operators.pem).unwrap();
    let instance = instance.with_config(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[admin]\nclient_ca_file = \"{}\"\n",
        tls_dir.join("cert.pem").display(),
        tls_dir.join("key.pem").display(),
        ca_file.display()
    ));
    let (ops, ops_secret) = admin_client(&instance, "portcullis:admin");
    let server = instance.serve();
    let server_ca = std::fs::read(tls_dir.join("cert.pem")).unwrap();
    let admin = server.admin.clone().unwrap().replace("http://", "https://");
    let token: serde_json::Value = https(&server_ca, None)
        .post(server.url("/oauth2/token"))
        .basic_auth(&ops, Some(&ops_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    crate::harness::remember_tokens(&token);
    let t = token["access_token"].as_str().unwrap();

    let url = format!("{admin}/admin/clients");
    assert!(https(&server_ca, None).get(&url).bearer_auth(t).send().await.is_err(), "no certificate: no handshake");
    let foreign = https(&server_ca, Some(client_identity(&strangers, "mallory", None)));
    assert!(foreign.get(&url).bearer_auth(t).send().await.is_err(), "a certificate of another CA: no handshake");
    assert!(http().get(url.replace("https://", "http://")).send().await.is_err(), "no plain HTTP");
    let operator = https(&server_ca, Some(client_identity(&operators, "alice", None)));
    assert_eq!(operator.get(&url).send().await.unwrap().status(), 401, "the certificate alone is not enough");
    assert_eq!(operator.get(&url).bearer_auth(t).send().await.unwrap().status(), 200);
    assert_eq!(operator.get(format!("{admin}/metrics")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn admin_api_validates_and_tests_the_policy_directory() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let instance = Instance::new().with_config(&format!("[authorization]\npolicies_dir = \"{shipped}\"\n"));
    let (ops, ops_secret) = admin_client(&instance, "portcullis:admin");
    let server = instance.serve();
    let t = token(&server, &ops, &ops_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let valid: serde_json::Value =
        call(&server, "POST", "/admin/policies/validate", Some(&t), None).await.json().await.unwrap();
    assert_eq!(valid["valid"], true, "{valid}");
    assert!(valid["policies"].as_u64().unwrap() >= 6, "the shipped examples: {valid}");
    let none: serde_json::Value =
        call(&server, "POST", "/admin/policies/test", Some(&t), Some(serde_json::json!({ "case": [] })))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(none, serde_json::json!({ "cases": 0, "passed": 0, "failures": [] }));
    let bad = call(&server, "POST", "/admin/policies/test", Some(&t), Some(serde_json::json!({ "cases": 1 }))).await;
    assert_eq!(bad.status(), 400, "not a cases document");
}

/// `[admin] policies = true`: the shipped Cedar policies decide every admin call (roles,
/// not the admin scope), a denial is a 403 problem with `policy_denied` and an
/// `authz.denied` record naming the admin resource; nothing denied takes effect.
#[tokio::test]
async fn admin_api_decided_by_cedar_policies() {
    use crate::gateway::{forge, now};
    let instance = Instance::new();
    // The shipped policies, plus one that reads a parameter (decoded as the handler sees it).
    let dir = instance.data_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("keeper.cedar"),
        "permit (principal in Role::\"keeper\", action == Action::\"GET\", resource == Route::\"portcullis-admin\")\n\
         when { resource has username && resource.username == \"carol x\" };\n",
    )
    .unwrap();
    let instance = instance
        .with_config(&format!("[authorization]\npolicies_dir = \"{}\"\n[admin]\npolicies = true\n", dir.display()));
    instance.create_user("carol", &[]);
    let server = instance.serve();
    let as_role = async |sub: &str, roles: &[&str], scope: &str| {
        let claims = serde_json::json!({
            "iss": server.issuer, "sub": sub, "aud": "portcullis-admin", "client_id": "console", "scope": scope,
            "roles": roles, "exp": now() + 600, "iat": now(), "nbf": now(), "jti": domain::secret::random_token(8),
        });
        forge(&instance, &claims).await
    };
    let operator = as_role("olga", &["portcullis-operator"], "").await;
    let auditor = as_role("aude", &["auditor"], "").await;
    let helpdesk = as_role("hal", &["helpdesk"], "").await;
    let scoped = as_role("sam", &[], "portcullis:admin").await;

    assert_eq!(call(&server, "GET", "/admin/clients", Some(&auditor), None).await.status(), 200);
    let denied = call(&server, "POST", "/admin/keys/rotate", Some(&auditor), None).await;
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["reason"], "policy_denied");
    assert!(!body.to_string().contains("permit"), "never the policy text");
    let keys: serde_json::Value =
        call(&server, "GET", "/admin/keys", Some(&operator), None).await.json().await.unwrap();
    let count = keys.as_array().unwrap().len();
    assert_eq!(call(&server, "POST", "/admin/keys/rotate", Some(&operator), None).await.status(), 200);
    let keys: serde_json::Value =
        call(&server, "GET", "/admin/keys", Some(&operator), None).await.json().await.unwrap();
    assert_eq!(keys.as_array().unwrap().len(), count + 1, "the operator's rotation happened");

    assert_eq!(call(&server, "POST", "/admin/users/carol/disable", Some(&helpdesk), None).await.status(), 200);
    let roles = serde_json::json!({ "roles": ["admin"] });
    let escalate = call(&server, "PUT", "/admin/users/carol/roles", Some(&helpdesk), Some(roles)).await;
    assert_eq!(escalate.status(), 403, "the help desk changes no roles");
    let carol: serde_json::Value =
        call(&server, "GET", "/admin/users/carol", Some(&operator), None).await.json().await.unwrap();
    assert_eq!(carol["status"], "disabled");
    assert_eq!(carol["roles"], serde_json::json!([]), "the denied change did not happen");
    assert_eq!(call(&server, "GET", "/admin/clients", Some(&helpdesk), None).await.status(), 403);
    assert_eq!(
        call(&server, "GET", "/admin/clients", Some(&scoped), None).await.status(),
        403,
        "scopes decide nothing"
    );
    let keeper = as_role("kim", &["keeper"], "").await;
    let decoded = call(&server, "GET", "/admin/users/carol%20x", Some(&keeper), None).await;
    // Allowed (not 403): the policy saw `carol x`, decoded; the handler then refuses the name.
    assert_eq!(decoded.status(), 400);
    assert_eq!(call(&server, "GET", "/admin/users/carol", Some(&keeper), None).await.status(), 403);

    let logs = server.logs_once("authz.denied");
    let denied: Vec<&String> = logs.iter().filter(|l| l.contains("\"event\":\"authz.denied\"")).collect();
    assert!(denied.iter().any(|l| l.contains("User::hal") && l.contains("portcullis-admin") && l.contains("/roles")));
    assert!(denied.iter().any(|l| l.contains("User::sam") && l.contains("default-deny")));
}
