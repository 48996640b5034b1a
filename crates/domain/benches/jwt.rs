//! Criterion micro-benchmark: signing and verifying an RFC 9068 access token with each
//! algorithm Portcullis issues (ES256, RS256, EdDSA), and checking one ES256 DPoP proof
//! (RFC 9449 §4.3, every check but the replay cache). Run: `cargo bench -p portcullis-domain`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "benchmark setup")]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use portcullis_domain::jose::{self, Algorithm, Signer, Verifier};
use portcullis_domain::token::{ACCESS_TOKEN_TYP, AccessTokenClaims, Audience};

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://id.example.com".into(),
        sub: "billing".into(),
        aud: Audience::One("https://api.example.com".into()),
        exp: 1_700_000_900,
        iat: 1_700_000_000,
        nbf: Some(1_700_000_000),
        jti: "b1lqQ3bQ4wC3Gk2w7Dq1ZQ".into(),
        client_id: "billing".into(),
        scope: Some("invoices:read invoices:write".into()),
        auth_time: None,
        roles: vec![],
        groups: vec![],
        cnf: None,
        attributes: std::collections::BTreeMap::new(),
    }
}

fn bench(c: &mut Criterion) {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let (signer, _) = Signer::generate(alg).expect("key generation");
        let jwk = signer.public_jwk().expect("jwk");
        let verifier = Verifier::from_jwk(&jwk).expect("verifier");
        let claims = claims();
        c.bench_function(&format!("sign/{alg}"), |b| {
            b.iter(|| jose::sign(&signer, &jwk.kid, ACCESS_TOKEN_TYP, black_box(&claims)).unwrap());
        });
        let token = jose::sign(&signer, &jwk.kid, ACCESS_TOKEN_TYP, &claims).unwrap();
        c.bench_function(&format!("verify/{alg}"), |b| {
            b.iter(|| jose::verify(black_box(&token), |_| Some(&verifier)).unwrap());
        });
    }
}

/// One DPoP proof as a client makes it: P-256 key in the header, `ath` of a token.
fn dpop_proof(token: &str, url: &str, iat: i64) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = key.public_key().as_ref();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let claims = serde_json::json!({"jti": "j1", "htm": "GET", "htu": url, "iat": iat, "ath": portcullis_domain::dpop::ath(token)});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = key.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

fn bench_dpop(c: &mut Criterion) {
    use portcullis_domain::dpop::{DpopSettings, NonceKey, ProofRequest, check_proof};
    let (url, token, now) = ("https://api.example.com/v1/items", "header.payload.signature", 1_700_000_000);
    let proof = dpop_proof(token, url, now);
    let request = ProofRequest { method: "GET", url, access_token: Some(token), require_nonce: false };
    let (settings, nonces) = (DpopSettings::default(), NonceKey::new(&[7; 32]));
    c.bench_function("dpop/check_proof/ES256", |b| {
        b.iter(|| check_proof(black_box(&proof), &request, &settings, &nonces, now).unwrap());
    });
}

criterion_group!(benches, bench, bench_dpop);
criterion_main!(benches);
