//! Request-path normalisation, done once before route matching; the upstream receives the
//! same normalised path, so the gateway and the service can never disagree about which
//! resource was asked for (the root of most path-confusion bypasses).
//!
//! - percent-encoded unreserved characters are decoded (RFC 3986 §2.3, §6.2.2.2), other
//!   escapes are upper-cased (§6.2.2.1);
//! - duplicate slashes collapse; dot-segments are removed (§5.2.4), never above the root;
//! - raw non-ASCII bytes, controls and spaces are percent-encoded (§2.1), so the result is
//!   ASCII and normalising it again changes nothing;
//! - encoded slashes (`%2F`), encoded dots (`%2E`), encoded backslashes (`%5C`), NUL (raw or
//!   `%00`), raw backslashes, malformed escapes and relative paths are refused.

/// Why a path was refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSlash,
    EncodedDot,
    Backslash,
    Nul,
    BadEscape,
}

impl PathError {
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the request path must start with /",
            Self::EncodedSlash => "encoded slashes are not allowed in the path",
            Self::EncodedDot => "encoded dots are not allowed in the path",
            Self::Backslash => "backslashes are not allowed in the path",
            Self::Nul => "NUL is not allowed in the path",
            Self::BadEscape => "the path has a malformed percent-escape",
        }
    }
}

/// Normalises an absolute request path (without the query).
///
/// # Errors
/// See [`PathError`].
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" => {}
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing_slash =
        decoded.len() > 1 && (decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/.."));
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hi, lo) else { return Err(PathError::BadEscape) };
                let value = u8::try_from(hi * 16 + lo).map_err(|_| PathError::BadEscape)?;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'.' => return Err(PathError::EncodedDot),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    v if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' || v == b'~' => out.push(v as char),
                    v => push_escape(&mut out, v),
                }
                i += 3;
            }
            // RFC 3986 §2.1: non-ASCII bytes, controls and space are percent-encoded, so the
            // normalised path is ASCII and a fixed point (found by the `path_normalizer`
            // fuzz target: raw UTF-8 used to come out re-encoded as Latin-1).
            b if b >= 0x80 || b <= 0x20 || b == 0x7F => {
                push_escape(&mut out, b);
                i += 1;
            }
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Appends `%XX` (upper-case, RFC 3986 §6.2.2.1) without allocating.
fn push_escape(out: &mut String, byte: u8) {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).map_or('0', |c| c.to_ascii_uppercase());
    out.push('%');
    out.push(digit(byte >> 4));
    out.push(digit(byte & 0x0F));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (raw, want) in [
            ("/", "/"),
            ("//admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/public/./x/", "/public/x/"),
            ("/%61dmin", "/admin"),
            ("/a%7eb", "/a~b"),
            ("/a%3ab", "/a%3Ab"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a//b///c", "/a/b/c"),
            ("/..", "/"),
            ("/Ñ\u{a0}Jz/", "/%C3%91%C2%A0Jz/"),
            ("/a b\u{7f}", "/a%20b%7F"),
        ] {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
            assert_eq!(normalize(want).unwrap(), want, "{want} is a fixed point");
        }
    }

    #[test]
    fn refuses() {
        for (raw, err) in [
            ("/public/%2e%2e/admin", PathError::EncodedDot),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("admin", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalised_paths_are_fixed_points_and_clean(raw in "/([a-zA-Z0-9%./_~-]|.){0,40}") {
            if let Ok(n) = normalize(&raw) {
                proptest::prop_assert_eq!(normalize(&n), Ok(n.clone()));
                proptest::prop_assert!(n.starts_with('/'));
                proptest::prop_assert!(!n.contains("//"));
                proptest::prop_assert!(!n.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
