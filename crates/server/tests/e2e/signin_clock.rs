//! The time rules of signing in, on the real services and SQLite with a fixed clock (no
//! sleeping): session idle and absolute ends, the 60 s code, refresh idle and absolute ends,
//! the refresh grace window's edge, the lockout's growth and end.

use std::sync::Arc;
use std::time::Duration;

use domain::client::{ClientCredentials, ClientRegistration, GrantType};
use domain::clock::FixedClock;
use domain::keyring::KeyRing;
use domain::keys::{MasterKey, RotationPolicy};
use domain::password::{PasswordHasher, PasswordParams};
use domain::ports::Stores;
use domain::request::{FormParams, TokenRequest};
use domain::scope::Scopes;
use domain::service::{IssuedToken, TokenService};
use domain::settings::{FlowSettings, Issuer, TokenSettings};
use domain::signin::{LoginOutcome, Next, SignIn};
use domain::throttle::{LoginThrottle, ThrottlePolicy};
use domain::user::User;
use zeroize::Zeroizing;

const T0: i64 = 1_700_000_000;
const PASSWORD: &str = "correct horse battery staple";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "https://app.example.com/cb";

struct World {
    clock: Arc<FixedClock>,
    signin: SignIn,
    stores: Stores,
    client_id: String,
}

fn flow() -> FlowSettings {
    FlowSettings {
        code_ttl: 60,
        refresh_idle_ttl: 1000,
        refresh_absolute_ttl: 5000,
        refresh_grace: 10,
        session_idle_ttl: 600,
        session_absolute_ttl: 3600,
        id_token_ttl: 300,
    }
}

async fn world() -> World {
    let clock = Arc::new(FixedClock::new(T0));
    let store = Arc::new(store::SqliteStore::open_in_memory().await.unwrap());
    let stores = store.stores();
    let policy = RotationPolicy {
        algorithm: domain::jose::Algorithm::ES256,
        interval: 90 * 86_400,
        announce: 86_400,
        max_token_ttl: 3600,
        leeway: 30,
    };
    let master = MasterKey::from_bytes(&[5u8; 32]).unwrap();
    let ring = Arc::new(KeyRing::load(stores.keys.clone(), master, policy, clock.clone()).await.unwrap());
    let settings = TokenSettings {
        issuer: Issuer::parse("https://id.example.com").unwrap(),
        access_token_ttl: 900,
        max_access_token_ttl: 3600,
        leeway: 30,
        flow: flow(),
    };
    let tokens = TokenService::new(settings, &stores, ring, clock.clone());
    let hasher = PasswordHasher::new(
        PasswordParams { memory_kib: 64, iterations: 1, parallelism: 1 },
        2,
        Duration::from_secs(5),
    )
    .unwrap();
    let policy = ThrottlePolicy { account_free_failures: 2, base_lock: 30, max_lock: 100, ..ThrottlePolicy::default() };
    let signin = SignIn::new(tokens, &stores, hasher.clone(), Arc::new(LoginThrottle::new(policy)));
    let user = User {
        id: "u-1".into(),
        username: "erin".into(),
        email: None,
        email_verified: false,
        name: None,
        password_hash: hasher.hash(Zeroizing::new(PASSWORD.into())).await.unwrap(),
        roles: vec![],
        groups: vec![],
        attributes: serde_json::Map::new(),
        disabled: false,
        created_at: T0,
        updated_at: T0,
    };
    stores.users.insert_user(&user).await.unwrap();
    let (client, _) = ClientRegistration {
        name: "app".into(),
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        allowed_scopes: Scopes::parse("openid").unwrap(),
        redirect_uris: vec![REDIRECT.into()],
        public: true,
        first_party: true,
        ..ClientRegistration::default()
    }
    .into_client(T0)
    .unwrap();
    stores.clients.insert_client(&client).await.unwrap();
    World { clock, signin, stores, client_id: client.id }
}

impl World {
    fn raw_pairs(&self) -> Vec<(String, String)> {
        let pairs = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    async fn login(&self) -> String {
        match self.signin.login("erin", Zeroizing::new(PASSWORD.into()), "10.0.0.1", None).await.unwrap() {
            LoginOutcome::Ok { cookie, .. } => cookie.to_string(),
            other => panic!("login failed: {other:?}"),
        }
    }

    /// The authorization decision for a browser holding `cookie`.
    async fn authorize(&self, cookie: &str) -> Next {
        self.authorize_with(cookie, &[]).await
    }

    async fn authorize_with(&self, cookie: &str, extra: &[(&str, &str)]) -> Next {
        let mut pairs = self.raw_pairs();
        pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let request = self.signin.parse_request(&FormParams::new(pairs)).await.unwrap();
        let session = self.signin.session(Some(cookie)).await.unwrap();
        self.signin.authorize(request, session, false, false).await.unwrap()
    }

    async fn code(&self, cookie: &str) -> String {
        let Next::Redirect(url) = self.authorize(cookie).await else { panic!("expected a code") };
        let url = url::Url::parse(&url).unwrap();
        url.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned()
    }

    async fn redeem(&self, code: &str) -> Result<IssuedToken, domain::OAuthError> {
        let request = TokenRequest::AuthorizationCode {
            code: code.into(),
            redirect_uri: Some(REDIRECT.into()),
            verifier: domain::pkce::CodeVerifier::parse(VERIFIER).unwrap(),
        };
        self.signin.tokens().token(&self.creds(), request, None).await
    }

    async fn refresh(&self, token: &str) -> Result<IssuedToken, domain::OAuthError> {
        let request = TokenRequest::RefreshToken { refresh_token: token.into(), scope: None };
        self.signin.tokens().token(&self.creds(), request, None).await
    }

    fn creds(&self) -> ClientCredentials {
        ClientCredentials::None { client_id: self.client_id.clone() }
    }
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_end() {
    let w = world().await;
    let cookie = w.login().await;
    assert!(matches!(w.authorize(&cookie).await, Next::Redirect(_)), "signed in");
    w.clock.advance(599);
    assert!(matches!(w.authorize(&cookie).await, Next::Redirect(_)), "activity keeps it alive");
    w.clock.advance(599);
    assert!(matches!(w.authorize(&cookie).await, Next::Redirect(_)));
    w.clock.advance(600);
    assert!(matches!(w.authorize(&cookie).await, Next::Login(_)), "idle for the idle lifetime: ended");

    let cookie = w.login().await;
    for _ in 0..6 {
        w.clock.advance(590);
        assert!(matches!(w.authorize(&cookie).await, Next::Redirect(_)));
    }
    w.clock.advance(90);
    assert!(matches!(w.authorize(&cookie).await, Next::Login(_)), "absolute end reached despite activity");
}

#[tokio::test]
async fn codes_live_sixty_seconds() {
    let w = world().await;
    let cookie = w.login().await;
    let code = w.code(&cookie).await;
    w.clock.advance(59);
    assert!(w.redeem(&code).await.is_ok());
    let code = w.code(&cookie).await;
    w.clock.advance(60);
    let err = w.redeem(&code).await.unwrap_err();
    assert_eq!(err.code, domain::ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn refresh_tokens_end_idle_and_absolute_and_the_grace_window_has_an_edge() {
    let w = world().await;
    let cookie = w.login().await;
    let first = w.redeem(&w.code(&cookie).await).await.unwrap();
    let r1 = first.refresh_token.unwrap();

    // Grace window: a retry 9 s later gets the same pair; 10 s later it is reuse.
    let second = w.refresh(&r1).await.unwrap();
    w.clock.advance(9);
    let retry = w.refresh(&r1).await.unwrap();
    assert_eq!(retry.refresh_token, second.refresh_token);
    assert_eq!(retry.access_token, second.access_token);
    w.clock.advance(1);
    assert!(w.refresh(&r1).await.is_err(), "outside the grace window: reuse");
    let r2 = second.refresh_token.unwrap();
    assert!(w.refresh(&r2).await.is_err(), "and the family is gone");
    assert!(w.signin.tokens().verify(&second.access_token).await.unwrap().is_err(), "its access token revoked");

    // Idle end: unused for refresh_idle_ttl.
    let cookie = w.login().await;
    let t = w.redeem(&w.code(&cookie).await).await.unwrap();
    w.clock.advance(999);
    let t = w.refresh(&t.refresh_token.unwrap()).await.expect("used just in time");
    w.clock.advance(1000);
    assert!(w.refresh(&t.refresh_token.unwrap()).await.is_err(), "idle too long");

    // Absolute end: used often, still ends refresh_absolute_ttl after sign-in.
    let cookie = w.login().await;
    let mut t = w.redeem(&w.code(&cookie).await).await.unwrap();
    for _ in 0..5 {
        w.clock.advance(990);
        t = w.refresh(&t.refresh_token.unwrap()).await.unwrap();
    }
    w.clock.advance(60);
    assert!(w.refresh(&t.refresh_token.unwrap()).await.is_err(), "the chain's absolute end");
}

#[tokio::test]
async fn lockout_grows_and_ends() {
    let w = world().await;
    let fail = || w.signin.login("erin", Zeroizing::new("wrong password!".into()), "10.0.0.2", None);
    assert!(matches!(fail().await.unwrap(), LoginOutcome::Failed));
    assert!(matches!(fail().await.unwrap(), LoginOutcome::Failed), "the second failure starts a 30 s lock");
    let right = || w.signin.login("erin", Zeroizing::new(PASSWORD.into()), "10.0.0.2", None);
    assert!(matches!(right().await.unwrap(), LoginOutcome::Locked { retry_after: 30 }));
    w.clock.advance(30);
    assert!(matches!(fail().await.unwrap(), LoginOutcome::Failed), "lock over; the next failure doubles it");
    assert!(matches!(right().await.unwrap(), LoginOutcome::Locked { retry_after: 60 }));
    w.clock.advance(60);
    assert!(matches!(right().await.unwrap(), LoginOutcome::Ok { .. }), "after the lock, the right password works");
    assert!(matches!(fail().await.unwrap(), LoginOutcome::Failed), "success reset the account's count");
    let _ = w.stores.sessions.purge_sessions(T0).await.unwrap();
}

#[tokio::test]
async fn prompt_login_max_age_and_prompt_consent_are_honoured() {
    let w = world().await;
    let cookie = w.login().await;
    assert!(matches!(w.authorize_with(&cookie, &[("prompt", "login")]).await, Next::Login(_)), "prompt=login");
    w.clock.advance(100);
    assert!(matches!(w.authorize_with(&cookie, &[("max_age", "50")]).await, Next::Login(_)), "auth too old");
    assert!(matches!(w.authorize_with(&cookie, &[("max_age", "500")]).await, Next::Redirect(_)), "recent enough");
    assert!(
        matches!(w.authorize_with(&cookie, &[("prompt", "consent")]).await, Next::Consent(..)),
        "prompt=consent asks even a first-party app's user"
    );
    let Next::Redirect(url) = w.authorize_with("no-such-session", &[("prompt", "none")]).await else {
        panic!("prompt=none never shows a page")
    };
    assert!(url.contains("error=login_required"), "{url}");
}

#[tokio::test]
async fn an_old_password_hash_is_upgraded_at_login() {
    let w = world().await;
    let old = PasswordHasher::new(
        PasswordParams { memory_kib: 128, iterations: 2, parallelism: 1 },
        1,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut user = w.stores.users.get_user("u-1").await.unwrap().unwrap();
    user.password_hash = old.hash(Zeroizing::new(PASSWORD.into())).await.unwrap();
    w.stores.users.update_user(&user).await.unwrap();
    assert!(user.password_hash.contains("m=128,t=2"));
    w.login().await;
    let upgraded = w.stores.users.get_user("u-1").await.unwrap().unwrap().password_hash;
    assert!(upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{upgraded}");
    w.login().await;
}
