//! Any bytes as a compact JWS: parsing and verification never panic, and nothing verifies
//! without a real signature by the key.
#![no_main]

use std::sync::OnceLock;

use domain::jose::{self, Algorithm, Signer, Verifier};
use domain::token::{JwtPolicy, verify_jwt};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let (signer, _) = Signer::generate(Algorithm::ES256).expect("key");
        Verifier::from_jwk(&signer.public_jwk().expect("jwk")).expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let _ = jose::peek_header(&token);
    let verified = jose::verify(&token, |_| Some(verifier()));
    assert!(verified.is_err(), "random input verified under a fresh key");
    let policy = JwtPolicy { issuer: "https://id.example.com", audiences: &[], leeway: 30, typ: None };
    assert!(verify_jwt(&token, |_| Some(verifier()), &policy, 1_700_000_000).is_err());
});
