//! The Portcullis API gateway: authenticate → authorize → rate-limit → select upstream →
//! forward → respond. Verifies tokens in-process with the domain's key model.
//!
//! Empty until the gateway issue lands; the crate exists now so the dependency fence
//! (no database, no cache, no authserver) is enforced from the first commit.
