//! The admin API on the admin listener: OpenAPI document, bearer tokens with the admin
//! audience and scope (read-only scope for GETs), RFC 6750 challenges, problem+json errors,
//! and an incident operation whose effect and audit record (actor = the token's subject)
//! are checked.

use std::time::{Duration, Instant};

use crate::harness::{Instance, Server, http, introspect, token};

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
    let deadline = Instant::now() + Duration::from_secs(5);
    while introspect(&server, &reader, &reader_secret, &victim_token).await["active"] == true {
        assert!(Instant::now() < deadline, "the client's token is still active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = instance.cli(&["audit", "search", "--event", "incident.client_revoked", "--json"]);
    let record: serde_json::Value =
        serde_json::from_str(audit.stdout.lines().next().expect("an audit record")).unwrap();
    assert_eq!(record["fields"]["actor"], format!("token:{ops}"), "the operator is the token's subject");
    assert_eq!(record["fields"]["client_id"], victim.as_str());
}
