//! Any request path: normalisation never panics; what it accepts is absolute, has no empty,
//! `.` or `..` segments, and normalises to itself (so matching and forwarding agree).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(path) = gateway::path::normalize(raw) {
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path.contains("//"), "{path:?}");
        assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path:?}");
        assert_eq!(gateway::path::normalize(&path).as_deref(), Ok(path.as_str()), "idempotent");
    }
});
