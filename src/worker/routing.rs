//! How the queue spreads tasks over the workers of one pool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the queue picks among a pool's workers with free slots (see the README's section
/// on routing).
///
/// Workers pull: each tells the queue how many tasks it can take (its credits), and the
/// queue chooses which of them gets the next task. A pool's workers all use its strategy;
/// tasks with an `affinity_key` go to the worker their key is bound to under either.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// The worker with the most free slots first, which takes as many queued tasks as it
    /// has slots for before the next is served. The default.
    #[default]
    LeastLoaded,
    /// One task per worker in turn: the worker served longest ago goes next (new workers
    /// in the order they attached), so N tasks over k idle workers land N/k on each, in
    /// order.
    RoundRobin,
}

impl RoutingStrategy {
    /// The name used in settings and the API (`least_loaded`, `round_robin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastLoaded => "least_loaded",
            Self::RoundRobin => "round_robin",
        }
    }
}

impl fmt::Display for RoutingStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoutingStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::LeastLoaded, Self::RoundRobin]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown routing `{s}`; expected least_loaded or round_robin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for r in [RoutingStrategy::LeastLoaded, RoutingStrategy::RoundRobin] {
            assert_eq!(r.as_str().parse::<RoutingStrategy>(), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{r}\""));
        }
        assert_eq!(RoutingStrategy::default(), RoutingStrategy::LeastLoaded);
        let err = "random".parse::<RoutingStrategy>().unwrap_err();
        assert!(err.contains("least_loaded"), "{err}");
    }
}
