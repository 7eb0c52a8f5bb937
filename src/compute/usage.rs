//! What model calls cost, by node and model: requests, failures, prompt and completion
//! tokens, and latency. Chat handlers record each call
//! ([`ComputeCluster::record_model_call`](super::ComputeCluster::record_model_call)); `/metrics`
//! shows them as `wrangle_llm_*`.
//!
//! Model names come from task input, so the table is bounded: past [`MAX_SERIES`] pairs,
//! calls of new pairs are counted under the model `other`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Histogram;

/// Most node and model pairs counted apart.
pub const MAX_SERIES: usize = 1_000;

/// One model call, as a chat handler saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCall {
    /// Tokens of the prompt, when the server said.
    pub prompt_tokens: Option<u64>,
    /// Tokens generated, when the server said.
    pub completion_tokens: Option<u64>,
    /// From sending the request to the whole answer.
    pub latency: Duration,
    /// False when the call failed.
    pub ok: bool,
}

/// The counters of one node and model.
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Calls.
    pub requests: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Latency of the calls that succeeded.
    pub latency: Arc<Histogram>,
}

/// The counters of every node and model.
#[derive(Debug, Default)]
pub(crate) struct ModelUsage {
    series: Mutex<BTreeMap<(String, String), ModelCounters>>,
}

impl ModelUsage {
    pub(crate) fn record(&self, node: &str, model: &str, call: ModelCall) {
        let mut series = self.series.lock().expect("model usage");
        let key = (node.to_string(), model.to_string());
        let key = if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            (node.to_string(), "other".to_string())
        } else {
            key
        };
        let c = series.entry(key).or_default();
        c.requests += 1;
        if call.ok {
            c.latency.observe(call.latency);
        } else {
            c.failures += 1;
        }
        c.prompt_tokens += call.prompt_tokens.unwrap_or(0);
        c.completion_tokens += call.completion_tokens.unwrap_or(0);
    }

    /// Every pair's counters, copied: `(node, model, counters)`.
    pub(crate) fn read(&self) -> Vec<(String, String, ModelCounters)> {
        let series = self.series.lock().expect("model usage");
        series
            .iter()
            .map(|((node, model), c)| {
                (
                    node.clone(),
                    model.clone(),
                    ModelCounters {
                        requests: c.requests,
                        failures: c.failures,
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                        latency: c.latency.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_add_up_by_node_and_model_and_new_pairs_past_the_bound_are_other() {
        let u = ModelUsage::default();
        let ok = ModelCall {
            prompt_tokens: Some(10),
            completion_tokens: Some(5),
            latency: Duration::from_millis(20),
            ok: true,
        };
        u.record("n", "m", ok);
        u.record("n", "m", ok);
        u.record(
            "n",
            "m",
            ModelCall {
                ok: false,
                ..ModelCall::default()
            },
        );
        let read = u.read();
        assert_eq!(read.len(), 1);
        let (_, _, c) = &read[0];
        assert_eq!(
            (c.requests, c.failures, c.prompt_tokens, c.completion_tokens),
            (3, 1, 20, 10)
        );
        assert_eq!(c.latency.cumulative().1, 2);
        for i in 0..MAX_SERIES + 5 {
            u.record("n", &format!("model-{i}"), ok);
        }
        let read = u.read();
        assert_eq!(read.len(), MAX_SERIES + 1);
        let other = read.iter().find(|(_, m, _)| m == "other").unwrap();
        assert_eq!(other.2.requests, 6);
    }
}
