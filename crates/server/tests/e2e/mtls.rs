//! mTLS at the gateway (RFC 8705 §2 style client authentication): the listener verifies
//! client certificates against `tls.client_ca_file`; a route with `auth = "mtls"` forwards
//! the certificate's subject as the identity; a certificate from another CA, no certificate,
//! a subject outside the route's allow-list, and a spoofed identity header all stay out.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::harness::Instance;
use crate::upstream::Upstream;

pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { issuer: Issuer::new(params, key), pem }
}

/// A client certificate and key (PEM, concatenated as reqwest's `Identity` wants them).
pub(crate) fn client_identity(ca: &Ca, cn: &str, uri: Option<&str>) -> reqwest::Identity {
    client_cert(ca, cn, uri).0
}

/// A client certificate as reqwest's `Identity`, and its DER (for `x5t#S256`).
pub(crate) fn client_cert(ca: &Ca, cn: &str, uri: Option<&str>) -> (reqwest::Identity, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let identity = reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap();
    (identity, cert.der().to_vec())
}

pub(crate) fn https(server_ca: &[u8], identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca).unwrap())
        .redirect(reqwest::redirect::Policy::none());
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

/// An instance with TLS (a dev certificate) whose listeners verify client certificates
/// against a new CA; `rest` is the rest of its configuration. Returns the instance, the
/// clients' CA and the server certificate (PEM, for clients to trust).
pub(crate) fn mtls_instance(rest: &str) -> (Instance, Ca, Vec<u8>) {
    let instance = Instance::new();
    let tls_dir = instance.data_dir().join("certs");
    assert_eq!(instance.cli(&["tls", "dev-cert", "--out", tls_dir.to_str().unwrap()]).status, 0);
    let clients = ca("Clients CA");
    let ca_file = instance.data_dir().join("clients-ca.pem");
    std::fs::write(&ca_file, &clients.pem).unwrap();
    let instance = instance.with_config(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{rest}",
        tls_dir.join("cert.pem").display(),
        tls_dir.join("key.pem").display(),
        ca_file.display(),
    ));
    let server_ca = std::fs::read(tls_dir.join("cert.pem")).unwrap();
    (instance, clients, server_ca)
}

#[tokio::test]
async fn client_certificates_authenticate_mtls_routes() {
    let upstream = Upstream::start(None).await;
    let (instance, clients, server_ca) = mtls_instance(&format!(
        r#"

[[gateway.routes]]
name = "internal"
path_prefix = "/internal"
upstreams = ["{up}"]
auth = "mtls"

[[gateway.routes]]
name = "billing-only"
path_prefix = "/billing"
upstreams = ["{up}"]
auth = "mtls"
mtls_subjects = ["spiffe://example.org/billing"]

[[gateway.routes]]
name = "public"
path_prefix = "/public"
upstreams = ["{up}"]
auth = "none"
"#,
        up = upstream.url(),
    ));
    let server = instance.serve();

    // A certificate from the configured CA: the SAN URI becomes the forwarded subject, and
    // a subject header the client sends is replaced, not trusted.
    let billing = https(&server_ca, Some(client_identity(&clients, "billing", Some("spiffe://example.org/billing"))));
    let resp = billing
        .get(server.gw("/internal/jobs"))
        .header("x-portcullis-subject", "spiffe://example.org/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.headers.get("x-portcullis-subject").map(String::as_str), Some("spiffe://example.org/billing"));
    let resp = billing.get(server.gw("/billing/invoices")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "on the route's allow-list");

    // Another certificate of the same CA, identified by its CN, is not on /billing's list.
    let reports = https(&server_ca, Some(client_identity(&clients, "reports", None)));
    assert_eq!(reports.get(server.gw("/internal/x")).send().await.unwrap().status(), 200);
    assert_eq!(upstream.last().headers.get("x-portcullis-subject").map(String::as_str), Some("reports"));
    let before = upstream.count();
    let resp = reports.get(server.gw("/billing/invoices")).send().await.unwrap();
    assert_eq!(resp.status(), 403, "subject not allowed on this route");
    assert_eq!(upstream.count(), before, "never reached the upstream");

    // No certificate: the handshake still works (client_auth = optional), public routes
    // answer, mTLS routes refuse.
    let anonymous = https(&server_ca, None);
    assert_eq!(anonymous.get(server.gw("/public/x")).send().await.unwrap().status(), 200);
    let before = upstream.count();
    assert_eq!(anonymous.get(server.gw("/internal/x")).send().await.unwrap().status(), 401);
    assert_eq!(upstream.count(), before);

    // A certificate from a CA the gateway does not trust: the handshake fails.
    let stranger =
        https(&server_ca, Some(client_identity(&ca("Other CA"), "billing", Some("spiffe://example.org/billing"))));
    let before = upstream.count();
    assert!(stranger.get(server.gw("/internal/x")).send().await.is_err(), "untrusted client certificate refused");
    assert_eq!(upstream.count(), before);

    // The authorization server's listener asks for certificates but never requires one.
    assert_eq!(anonymous.get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

#[test]
fn mtls_routes_need_a_client_ca() {
    let instance = Instance::new().with_config(
        r#"
[[gateway.routes]]
path_prefix = "/internal"
upstreams = ["http://127.0.0.1:9"]
auth = "mtls"
"#,
    );
    let out = instance.cli(&["config", "check"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("client_ca_file"), "{}", out.stderr);
}
