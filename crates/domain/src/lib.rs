//! Portcullis domain: the OAuth 2.1 / OpenID Connect rules, typed requests, token issue and
//! verification, the signing-key model, and the ports (traits) that storage adapters
//! implement. Knows nothing of HTTP frameworks, databases or Redis.

pub mod abuse;
pub mod anomaly;
pub mod apikey;
pub mod audit;
pub mod authorize;
pub mod bff;
pub mod bounded;
pub mod client;
pub mod client_cache;
pub mod clock;
pub mod cluster;
pub mod dpop;
pub mod error;
pub mod grant;
pub mod grants;
pub mod jose;
pub mod keyring;
pub mod keys;
pub mod netaddr;
pub mod oidc;
pub mod password;
pub mod pkce;
pub mod policy;
pub mod ports;
pub mod ratelimit;
pub mod request;
pub mod revoked;
pub mod scope;
pub mod secret;
pub mod service;
pub mod settings;
pub mod signin;
pub mod throttle;
pub mod token;
pub mod trace;
pub mod user;

pub use error::{ErrorCode, OAuthError, StoreError};
