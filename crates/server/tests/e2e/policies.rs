//! Cedar policies through the gateway: tenant isolation and owner-only access decided from
//! verified claims and the route's path parameters (never from headers or the query), a
//! deny never reaches the upstream, the decision log names the policies, reloads swap
//! valid sets and refuse invalid ones while requests keep being answered (on change, on
//! SIGHUP and over the admin API); and the `policy validate / test` commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gateway::{forge, now};
use crate::harness::{Instance, Server, http, token};
use crate::upstream::Upstream;

const AUD: &str = "https://api.example.com";

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// A copy of the shipped policy directory the test may change.
fn policy_dir(instance: &Instance) -> PathBuf {
    let dir = instance.data_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn config(upstream: &str, dir: &Path) -> String {
    format!(
        r#"
[authorization]
policies_dir = "{dir}"
claims = {{ tenant = "org" }}
[authorization.roles]
billing = ["invoices:read"]

[[gateway.routes]]
name = "tenant-invoices"
path_prefix = "/tenants"
path_pattern = "/tenants/{{tenant}}/invoices/{{invoice}}"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]
permissions_all = ["invoices:read"]

[[gateway.routes]]
name = "profiles"
path_prefix = "/profiles"
path_pattern = "/profiles/{{id}}"
actions = {{ GET = "readProfile", PUT = "updateProfile" }}
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]

[[gateway.routes]]
name = "team-reports"
path_prefix = "/teams"
path_pattern = "/teams/{{team}}/reports"
upstreams = ["{upstream}"]
auth = "api_key"

[[gateway.routes]]
name = "status"
path_prefix = "/status"
upstreams = ["{upstream}"]
auth = "none"
policies = false

[[gateway.routes]]
name = "open"
path_prefix = "/open"
upstreams = ["{upstream}"]
auth = "none"
rate_limits = []
"#,
        dir = dir.display()
    )
}

/// A token of this server for `sub` with extra claims (signed with its real key).
async fn token_for(instance: &Instance, server: &Server, sub: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": server.issuer, "sub": sub, "aud": AUD, "client_id": "web-app", "scope": "",
        "exp": now() + 600, "iat": now(), "nbf": now(), "jti": domain::secret::random_token(8),
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    forge(instance, &claims).await
}

/// An instance with [`config`]'s routes over a copy of the shipped policies it may change.
fn policy_instance(upstream: &Upstream) -> (Instance, PathBuf) {
    let instance = Instance::new();
    let dir = policy_dir(&instance);
    (instance.with_config(&config(&upstream.url(), &dir)), dir)
}

async fn call(server: &Server, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http().request(method, server.gw(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn policies_decide_from_verified_facts_and_denials_never_reach_the_upstream() {
    let upstream = Upstream::start(None).await;
    let (instance, _) = policy_instance(&upstream);
    let server = instance.serve();
    let acme = token_for(&instance, &server, "u1", serde_json::json!({"roles": ["billing"], "org": "acme"})).await;

    let get = reqwest::Method::GET;
    assert_eq!(call(&server, get.clone(), "/tenants/acme/invoices/7", Some(&acme)).await.status(), 200);
    let before = upstream.count();
    let resp = call(&server, get.clone(), "/tenants/globex/invoices/7", Some(&acme)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "policy_denied");
    assert!(!body.to_string().contains("permit"), "never the policy text");
    assert_eq!(upstream.count(), before, "a denied request never reaches the upstream");

    // Spoofing: a header or query parameter naming another tenant changes nothing; only
    // the verified claim and the normalised path count.
    let spoofed = http()
        .get(server.gw("/tenants/globex/invoices/7?tenant=globex&org=globex"))
        .bearer_auth(&acme)
        .header("x-portcullis-tenant", "globex")
        .header("x-tenant", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 403);
    let own = http().get(server.gw("/tenants/acme/invoices/7?tenant=globex")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(own.status(), 200, "the query string is not the resource");
    let encoded = call(&server, get.clone(), "/tenants/%61cme/invoices/7", Some(&acme)).await;
    assert_eq!(encoded.status(), 200, "parameters come from the normalised path");
    let no_claim = token_for(&instance, &server, "u2", serde_json::json!({"roles": ["billing"]})).await;
    assert_eq!(call(&server, get.clone(), "/tenants/acme/invoices/7", Some(&no_claim)).await.status(), 403);
    // RBAC before the policies: without the permission the route's own check refuses.
    let support = token_for(&instance, &server, "u3", serde_json::json!({"roles": ["support"], "org": "acme"})).await;
    let resp = call(&server, get.clone(), "/tenants/acme/invoices/7", Some(&support)).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));

    // Owner-only: the path parameter against the subject; the route names the actions.
    let alice = token_for(&instance, &server, "alice", serde_json::json!({})).await;
    assert_eq!(call(&server, get.clone(), "/profiles/alice", Some(&alice)).await.status(), 200);
    assert_eq!(call(&server, reqwest::Method::PUT, "/profiles/alice", Some(&alice)).await.status(), 200);
    assert_eq!(call(&server, get.clone(), "/profiles/bob", Some(&alice)).await.status(), 403);
    assert_eq!(call(&server, reqwest::Method::DELETE, "/profiles/alice", Some(&alice)).await.status(), 403);

    // API keys: the key's owner (recorded at creation, verified with the key) against the
    // path; a header naming another owner changes nothing.
    let key = |owner: Option<&str>| {
        let mut args = vec!["apikey", "create", "--json", "--name", "reports"];
        args.extend(owner.map(|o| ["--owner", o]).iter().flatten());
        let out = instance.cli(&args);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        v["api_key"].as_str().unwrap().to_owned()
    };
    let (payments, ownerless) = (key(Some("payments")), key(None));
    let reports = async |path: &str, key: &str| {
        let req = http().get(server.gw(path)).header("x-api-key", key).header("x-portcullis-owner", "search");
        req.send().await.unwrap().status().as_u16()
    };
    assert_eq!(reports("/teams/payments/reports", &payments).await, 200);
    let before = upstream.count();
    assert_eq!(reports("/teams/search/reports", &payments).await, 403);
    assert_eq!(reports("/teams/payments/reports", &ownerless).await, 403);
    assert_eq!(upstream.count(), before, "denied key requests never reach the upstream");

    // A route exempted from policies, and one under them with no permit (default deny).
    assert_eq!(call(&server, get.clone(), "/status", None).await.status(), 200);
    assert_eq!(call(&server, get, "/open", None).await.status(), 403);

    let logs = server.logs_once("authz.denied");
    let denied: Vec<&String> = logs.iter().filter(|l| l.contains("\"event\":\"authz.denied\"")).collect();
    assert!(
        denied.iter().any(|l| l.contains("User::u1") && l.contains("tenant-invoices") && l.contains("default-deny"))
    );
    assert!(denied.iter().any(|l| l.contains("User::alice") && l.contains("profiles")));
}

#[tokio::test]
async fn reloads_swap_valid_sets_refuse_invalid_ones_and_keep_answering() {
    let upstream = Upstream::start(None).await;
    let (instance, dir) = policy_instance(&upstream);
    let server = instance.serve();
    let open = || call(&server, reqwest::Method::GET, "/open", None);
    assert_eq!(open().await.status(), 403, "default deny");

    // Requests keep flowing while the policies change under them.
    let base = server.gw("/open");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = stop.clone();
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !stop_load.load(std::sync::atomic::Ordering::SeqCst) {
            statuses.push(http().get(&base).send().await.map(|r| r.status().as_u16()).unwrap_or(0));
        }
        statuses
    });
    std::fs::write(
        dir.join("open.cedar"),
        "@id(\"open\") permit(principal, action == Action::\"GET\", resource == Route::\"open\");",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open().await.status() != 200 {
        assert!(Instant::now() < deadline, "a valid change is picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An invalid file is refused; the previous set stays in force.
    std::fs::write(dir.join("broken.cedar"), "permit(principal, action, resource) when { principal.nosuch };").unwrap();
    let logs = server.logs_once("policy.reload_failed");
    assert!(logs.iter().any(|l| l.contains("policy.reload_failed") && l.contains("broken.cedar")), "{logs:#?}");
    assert_eq!(open().await.status(), 200, "still the previous set");
    // Fixing it (and SIGHUP, for good measure) brings the new set in.
    std::fs::remove_file(dir.join("broken.cedar")).unwrap();
    std::fs::remove_file(dir.join("open.cedar")).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open().await.status() != 403 {
        assert!(Instant::now() < deadline, "the removal is picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 403), "every request answered: {statuses:?}");
    assert!(statuses.contains(&200) && statuses.contains(&403), "the load saw both sets");
}

/// `POST /admin/policies/reload` puts the set on disk in force before it answers, with its
/// size; a set that does not validate is a 422 problem naming the file, and the previous
/// set stays. Both outcomes are audit events with `cause: admin_api`.
#[tokio::test]
async fn the_admin_api_reloads_now_and_refuses_an_invalid_set() {
    let upstream = Upstream::start(None).await;
    let (instance, dir) = policy_instance(&upstream);
    let (ops, secret) = instance.create_client("portcullis:admin", "portcullis-admin");
    let server = instance.serve();
    let admin = token(&server, &ops, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/admin/policies/reload", server.admin.as_deref().unwrap());
    let reload = async || http().post(&url).bearer_auth(&admin).send().await.unwrap();
    let open = || call(&server, reqwest::Method::GET, "/open", None);
    assert_eq!(open().await.status(), 403, "default deny");
    let shipped: serde_json::Value = reload().await.json().await.unwrap();
    let count = shipped["policies"].as_u64().unwrap();
    assert_eq!(shipped, serde_json::json!({ "reloaded": true, "policies": count }));

    std::fs::write(
        dir.join("open.cedar"),
        "@id(\"open\") permit(principal, action == Action::\"GET\", resource == Route::\"open\");",
    )
    .unwrap();
    let reloaded = reload().await;
    assert_eq!(reloaded.status(), 200);
    let reloaded: serde_json::Value = reloaded.json().await.unwrap();
    assert_eq!(reloaded, serde_json::json!({ "reloaded": true, "policies": count + 1 }));
    assert_eq!(open().await.status(), 200, "in force when the call answered");

    std::fs::write(dir.join("broken.cedar"), "permit(principal, action, resource) when { principal.nosuch };").unwrap();
    let refused = reload().await;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let refused: serde_json::Value = refused.json().await.unwrap();
    let problems = refused["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("broken.cedar")), "{refused}");
    assert_eq!(open().await.status(), 200, "the previous set stays in force");

    // Both outcomes are in the audit trail, with the caller as actor.
    let audit = format!("{}/admin/audit?event=policy.&limit=50", server.admin.as_deref().unwrap());
    let by_api = |records: &serde_json::Value, event: &str| {
        records.as_array().unwrap().iter().any(|r| {
            r["event"] == event && r["fields"]["cause"] == "admin_api" && r["fields"]["actor"] == format!("token:{ops}")
        })
    };
    crate::harness::eventually(Duration::from_secs(5), "both reloads audited with their actor", || async {
        let records: serde_json::Value =
            http().get(&audit).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        by_api(&records, "policy.reloaded") && by_api(&records, "policy.reload_failed")
    })
    .await;
}

#[test]
fn policy_commands_validate_and_test() {
    let instance = Instance::new();
    let dir = policy_dir(&instance);
    let d = dir.to_str().unwrap();
    let ok = instance.cli(&["policy", "validate", d]);
    assert_eq!(ok.status, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("12 policies valid"), "{}", ok.stdout);

    let cases = shipped().join("tests.toml");
    let table = instance.cli(&["policy", "test", "--dir", d, "--file", cases.to_str().unwrap()]);
    assert_eq!(table.status, 0, "{}{}", table.stdout, table.stderr);
    assert!(table.stdout.contains("34 of 34 cases passed"), "{}", table.stdout);

    let one = instance.cli(&[
        "policy",
        "test",
        "--dir",
        d,
        "--principal",
        r#"{ type = "user", id = "ada", roles = ["admin"] }"#,
        "--action",
        "GET",
        "--resource",
        r#"{ route = "admin", path = "/admin" }"#,
    ]);
    assert_eq!(one.status, 0, "{}", one.stderr);
    assert_eq!(one.stdout.trim(), "ALLOW (policies: admin-only)");
    let denied = instance.cli(&[
        "policy",
        "test",
        "--dir",
        d,
        "--principal",
        r#"{ type = "user", id = "p1", roles = ["payments"] }"#,
        "--action",
        "POST",
        "--resource",
        r#"{ route = "payments" }"#,
        "--context",
        "{ mfa = false }",
    ]);
    assert_eq!(denied.stdout.trim(), "DENY (policies: payments-need-mfa)");

    // A wrong expectation fails the run and says which case.
    let wrong = instance.data_dir().join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nname = \"wrong\"\nprincipal = { type = \"anonymous\" }\naction = \"GET\"\nresource = { route = \"admin\" }\nexpect = \"allow\"\n",
    )
    .unwrap();
    let failed = instance.cli(&["policy", "test", "--dir", d, "--file", wrong.to_str().unwrap()]);
    assert_ne!(failed.status, 0);
    assert!(failed.stdout.contains("FAIL wrong: expected Allow, got DENY (default deny)"), "{}", failed.stdout);

    std::fs::write(dir.join("typo.cedar"), "permit(principal, action, resource) when { resource.nosuch == 1 };")
        .unwrap();
    let bad = instance.cli(&["policy", "validate", d]);
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("typo.cedar"), "{}", bad.stderr);
    // A server refuses to start on an invalid set.
    let instance = instance.with_config(&format!("[authorization]\npolicies_dir = \"{d}\"\n"));
    let check = instance.cli(&["config", "check"]);
    assert_ne!(check.status, 0);
    assert!(check.stderr.contains("typo.cedar"), "{}", check.stderr);
}
