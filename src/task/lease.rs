//! Leases: a task on its way to a worker, and the fencing token that every report about it
//! must carry.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Payload, TaskId};

/// The fencing token of one lease. A worker's report (complete, fail, extend) counts only
/// when it carries the token of the lease the task is running under now; any other report
/// (from before a coordinator restart, from a worker whose lease expired, from a worker that
/// never held the task) is refused, counted and logged, never applied.
///
/// - `epoch`: the coordinator's epoch, kept in the store and raised each time a coordinator
///   claims the database, so reports from before a restart (or from a deposed leader's
///   leases) never match;
/// - `attempt`: the task's attempt number, so a lease that was taken back and handed out
///   again never matches its old holder;
/// - `nonce`: 64 random bits from a cryptographic generator, so a worker that knows a task's
///   id and attempt still cannot forge the report of another worker's lease.
///
/// Its text form, `EPOCH.ATTEMPT.NONCE` in hex (`3.1.9f0c...`), is what crosses HTTP.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken {
    /// The epoch of the coordinator that granted the lease.
    pub epoch: u64,
    /// The attempt the lease is for (1-based).
    pub attempt: u32,
    /// Random bits that make the token unguessable.
    pub nonce: u64,
}

impl fmt::Debug for LeaseToken {
    // The nonce is a secret of the lease's holder: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseToken")
            .field("epoch", &self.epoch)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}.{:016x}", self.epoch, self.attempt, self.nonce)
    }
}

/// A lease token's text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease token must be EPOCH.ATTEMPT.NONCE in hex, got {0} characters that are not")]
pub struct LeaseTokenError(usize);

impl FromStr for LeaseToken {
    type Err = LeaseTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LeaseTokenError(s.len());
        let mut parts = s.split('.');
        let (Some(e), Some(a), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        // Plain hex digits only (from_str_radix would also take a leading `+`).
        let hex = |p: &str, max: usize| -> Result<u64, LeaseTokenError> {
            if p.is_empty() || p.len() > max || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Self {
            epoch: hex(e, 16)?,
            attempt: u32::try_from(hex(a, 8)?).map_err(|_| bad())?,
            nonce: hex(n, 16)?,
        })
    }
}

/// A task on its way to a worker: what a worker needs to run one attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    /// The task's id.
    pub task_id: TaskId,
    /// The fencing token every report about this attempt must carry.
    pub token: LeaseToken,
    /// The handler to run.
    pub task_type: Arc<str>,
    /// The task's input.
    pub payload: Payload,
    /// How long the attempt may run (the task's own timeout, else the worker's default).
    pub timeout: Option<Duration>,
    /// For a task without a timeout: how long the lease lasts unless its holder extends it.
    /// `None` when the task's timeout bounds the lease instead.
    pub lease_time: Option<Duration>,
    /// The trace the attempt's spans belong to (the task's own id unless it was given one).
    pub trace_id: super::TraceId,
}

impl Lease {
    /// The attempt number this lease is for (1-based).
    pub fn attempt(&self) -> u32 {
        self.token.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_through_its_text_form() {
        let t = LeaseToken {
            epoch: 7,
            attempt: 3,
            nonce: 0x9f0c_0000_dead_beef,
        };
        assert_eq!(t.to_string(), "7.3.9f0c0000deadbeef");
        assert_eq!(t.to_string().parse::<LeaseToken>(), Ok(t));
        let max = LeaseToken {
            epoch: u64::MAX,
            attempt: u32::MAX,
            nonce: u64::MAX,
        };
        assert_eq!(max.to_string().parse::<LeaseToken>(), Ok(max));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "1..3",
            "x.1.2",
            "1.2.+3",
            "11111111111111111.1.1",
            "1.111111111.1",
        ] {
            assert!(bad.parse::<LeaseToken>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_nonce_stays_out_of_debug_output() {
        let t = LeaseToken {
            epoch: 1,
            attempt: 1,
            nonce: 0xabcdef,
        };
        assert!(!format!("{t:?}").contains("abcdef"));
    }
}
