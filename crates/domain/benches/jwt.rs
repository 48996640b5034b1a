//! Criterion micro-benchmark: signing and verifying an RFC 9068 access token with each
//! algorithm Portcullis issues (ES256, RS256, EdDSA). Run: `cargo bench -p portcullis-domain`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

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

criterion_group!(benches, bench);
criterion_main!(benches);
