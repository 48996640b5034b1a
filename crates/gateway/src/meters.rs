//! A route's metrics handles, registered once per route. `metrics::counter!` with run-time
//! labels allocates its label strings and looks its key up in the registry on every call;
//! on the gateway's hot path that is three lookups per request, for the same few series.

use std::sync::OnceLock;

use axum::http::StatusCode;
use metrics::{Counter, Histogram};

/// How an upstream call ended, the `outcome` label of `portcullis_upstream_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ServerError,
    Timeout,
    Unreachable,
}

impl Outcome {
    const ALL: [Self; 4] = [Self::Ok, Self::ServerError, Self::Timeout, Self::Unreachable];

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "5xx",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
        }
    }
}

/// Status codes 100–599, one counter each, registered on first use.
const STATUSES: usize = 500;

pub struct RouteMeters {
    route: String,
    duration: Histogram,
    upstream: [Histogram; 4],
    statuses: Box<[OnceLock<Counter>]>,
}

impl std::fmt::Debug for RouteMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMeters").field("route", &self.route).finish_non_exhaustive()
    }
}

impl RouteMeters {
    /// The handles of `route` in the recorder installed now (the server installs it before
    /// it builds the gateway).
    #[must_use]
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            duration: metrics::histogram!("portcullis_gateway_request_duration_seconds", "route" => route.to_owned()),
            upstream: Outcome::ALL.map(|o| {
                metrics::histogram!(
                    "portcullis_upstream_duration_seconds", "route" => route.to_owned(), "outcome" => o.label()
                )
            }),
            statuses: (0..STATUSES).map(|_| OnceLock::new()).collect(),
        }
    }

    /// One request answered with `status`.
    pub fn count(&self, status: StatusCode) {
        let slot = usize::from(status.as_u16()).checked_sub(100).and_then(|i| self.statuses.get(i));
        match slot {
            Some(slot) => slot.get_or_init(|| requests(&self.route, status)).increment(1),
            None => requests(&self.route, status).increment(1),
        }
    }

    /// Time spent on a request, upstream included.
    pub fn request_took(&self, seconds: f64) {
        self.duration.record(seconds);
    }

    /// Time an upstream call took, by how it ended.
    pub fn upstream_took(&self, outcome: Outcome, seconds: f64) {
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        if let Some(h) = self.upstream.get(outcome as usize) {
            h.record(seconds);
        }
    }
}

/// The request counter of `route` (empty: no route matched) and `status`.
pub fn requests(route: &str, status: StatusCode) -> Counter {
    metrics::counter!(
        "portcullis_gateway_requests_total",
        "route" => route.to_owned(),
        "status" => status.as_str().to_owned()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_place_and_odd_ones_do_not_panic() {
        let m = RouteMeters::new("r");
        for code in [100, 200, 404, 599] {
            m.count(StatusCode::from_u16(code).unwrap());
        }
        m.count(StatusCode::from_u16(999).unwrap());
        assert!(m.statuses.first().unwrap().get().is_some());
        assert!(m.statuses.last().unwrap().get().is_some());
        assert!(m.statuses.get(200).unwrap().get().is_none());
        m.upstream_took(Outcome::Unreachable, 0.1);
    }

    #[test]
    fn each_outcome_indexes_its_own_histogram() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i, "{}", o.label());
        }
    }
}
