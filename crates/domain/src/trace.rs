//! W3C Trace Context (`traceparent`, <https://www.w3.org/TR/trace-context/>) for request
//! spans: continue the caller's trace when it sends a valid header, else start one; give
//! each request span its own id, and the upstream a header naming that span as parent.

use crate::secret::random_hex;

/// The trace a request span belongs to, and its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// This span: 16 lowercase hex digits.
    pub span_id: String,
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent_id: Option<String>,
}

fn hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

impl TraceContext {
    /// A span of the trace in `traceparent`, or of a new trace when the header is missing
    /// or invalid (§3.2.2.3: an invalid header is ignored, not an error).
    #[must_use]
    pub fn from_header(traceparent: Option<&str>) -> Self {
        let span_id = random_hex(8);
        let parsed = traceparent.and_then(|h| {
            let mut parts = h.trim().split('-');
            let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let valid = version == "00"
                && parts.next().is_none()
                && hex_id(trace, 32)
                && hex_id(parent, 16)
                && flags.len() == 2;
            valid.then(|| (trace.to_owned(), parent.to_owned()))
        });
        match parsed {
            Some((trace_id, parent)) => Self { trace_id, span_id, parent_id: Some(parent) },
            None => Self { trace_id: random_hex(16), span_id, parent_id: None },
        }
    }

    /// The `traceparent` for a request this span makes (the upstream's parent is us).
    #[must_use]
    pub fn child_header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_header_is_continued_and_anything_else_starts_a_trace() {
        let t = TraceContext::from_header(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.child_header(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let t = TraceContext::from_header(Some(bad));
            assert_eq!(t.parent_id, None, "{bad:?}");
            assert!(hex_id(&t.trace_id, 32) && hex_id(&t.span_id, 16));
        }
    }
}
