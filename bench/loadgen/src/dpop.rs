//! `portcullis-loadgen dpop-proofs`: DPoP-bound tokens and one fresh proof per request, for
//! the gateway benchmark (bench/dpop.sh). Gets `--tokens` DPoP tokens from the token
//! endpoint (client credentials, one key pair per token, each request with its own proof),
//! then writes `--count` lines `TOKEN PROOF`, round-robin over the tokens (`--alg ES256`,
//! the default, or `EdDSA` for the keys): every proof has
//! its own `jti` (the gateway accepts each once), `htm` GET, `htu` = `--url`, and `ath`.
//! Signing happens here, before the timed run, so wrk only replays lines.

use std::collections::BTreeMap;
use std::io::Write as _;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::Digest as _;

use crate::Error;

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

struct Key {
    pair: Pair,
    header: String,
}

impl Key {
    /// A fresh key pair: `ES256` (P-256) or `EdDSA` (Ed25519).
    fn new(alg: &str) -> Result<Self, Error> {
        let (pair, jwk) = if alg == "EdDSA" {
            let pair = Ed25519KeyPair::generate().map_err(|_| "key generation")?;
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            (Pair::EdDsa(pair), serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}))
        } else {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| "key generation")?;
            let point = pair.public_key().as_ref();
            let (x, y) = (point.get(1..33).ok_or("point")?, point.get(33..65).ok_or("point")?);
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
            (Pair::Es256(pair), jwk)
        };
        let alg = if matches!(pair, Pair::EdDsa(_)) { "EdDSA" } else { "ES256" };
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk}).to_string();
        Ok(Self { pair, header: URL_SAFE_NO_PAD.encode(header) })
    }

    #[expect(clippy::disallowed_methods, reason = "a proof's iat is wall-clock time; this tool has no Clock port")]
    fn proof(&self, htm: &str, htu: &str, token: Option<&str>, n: u64) -> Result<String, Error> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let mut claims = serde_json::Map::new();
        claims.insert("jti".into(), format!("{}-{n}", crate::random(12)).into());
        claims.insert("htm".into(), htm.into());
        claims.insert("htu".into(), htu.into());
        claims.insert("iat".into(), now.into());
        if let Some(t) = token {
            claims.insert("ath".into(), URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(t.as_bytes())).into());
        }
        let claims = serde_json::Value::Object(claims);
        let input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = match &self.pair {
            Pair::Es256(k) => k.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| "signing")?.as_ref().to_vec(),
            Pair::EdDsa(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

pub async fn main(args: impl Iterator<Item = String>) -> Result<(), Error> {
    let mut map = BTreeMap::new();
    let mut it = args;
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        map.insert(k.trim_start_matches("--").to_owned(), v);
    }
    let get = |k: &str| map.get(k).cloned().ok_or_else(|| format!("--{k} is required"));
    let (token_url, url, out) = (get("token-url")?, get("url")?, get("out")?);
    let basic = STANDARD.encode(format!("{}:{}", get("client-id")?, get("client-secret")?));
    let (tokens, count): (usize, u64) = (get("tokens")?.parse()?, get("count")?.parse()?);
    let alg = map.get("alg").cloned().unwrap_or_else(|| "ES256".to_owned());
    let http = reqwest::Client::new();
    let mut pool = Vec::with_capacity(tokens);
    for n in 0..tokens {
        let key = Key::new(&alg)?;
        let resp = http
            .post(&token_url)
            .header("authorization", format!("Basic {basic}"))
            .header("dpop", key.proof("POST", &token_url, None, n as u64)?)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?;
        let body: serde_json::Value = resp.json().await?;
        if body.get("token_type").and_then(serde_json::Value::as_str) != Some("DPoP") {
            return Err(format!("expected a DPoP token, got {body}").into());
        }
        let token = body.get("access_token").and_then(serde_json::Value::as_str).ok_or("no access_token")?.to_owned();
        pool.push((key, token));
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for n in 0..count {
        let (key, token) = pool.get(usize::try_from(n)? % pool.len().max(1)).ok_or("empty pool")?;
        writeln!(file, "{token} {}", key.proof("GET", &url, Some(token), n)?)?;
    }
    file.flush()?;
    Ok(())
}
