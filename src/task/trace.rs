//! Trace ids: the id that ties a task's spans and logs together, across workers, nodes and
//! the store, in the W3C Trace Context form (32 lowercase hex digits).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::TaskId;

/// A trace id (128 bits, W3C Trace Context's `trace-id`). A task carries the one it was
/// submitted with (`TaskSpec::trace_id`, the `trace_id` field or a `traceparent` header over
/// HTTP, a workflow run's id for its steps); otherwise its own id is its trace id, so every
/// task has one at no cost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// The trace id of these 16 bytes; `None` for all zeros (invalid in W3C Trace Context).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// A random one.
    pub fn random() -> Self {
        loop {
            if let Some(t) = Self::from_bytes(rand::random()) {
                return t;
            }
        }
    }

    /// Its 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The trace id of a W3C `traceparent` header (`00-<trace-id>-<parent-id>-<flags>`).
    pub fn from_traceparent(header: &str) -> Result<Self, TraceIdError> {
        let mut parts = header.trim().split('-');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(version), Some(trace), Some(parent), Some(flags))
                if version.len() == 2
                    && version != "ff"
                    && parent.len() == 16
                    && flags.len() == 2
                    && [version, parent, flags]
                        .iter()
                        .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())) =>
            {
                trace.parse()
            }
            _ => Err(TraceIdError(
                "a traceparent is 00-<32 hex>-<16 hex>-<2 hex>",
            )),
        }
    }
}

impl From<TaskId> for TraceId {
    /// A task id as a trace id (task ids are UUIDv7, never all zeros).
    fn from(id: TaskId) -> Self {
        Self(*id.as_uuid().as_bytes())
    }
}

impl From<uuid::Uuid> for TraceId {
    /// A UUID's bytes as a trace id (a workflow run's id for its steps); the nil UUID
    /// becomes a random trace id.
    fn from(id: uuid::Uuid) -> Self {
        Self::from_bytes(*id.as_bytes()).unwrap_or_else(Self::random)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// A trace id's text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trace id: {0}")]
pub struct TraceIdError(&'static str);

impl FromStr for TraceId {
    type Err = TraceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TraceIdError("expected 32 hex digits"));
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| TraceIdError("expected 32 hex digits"))?;
        }
        Self::from_bytes(bytes).ok_or(TraceIdError("all zeros is not a trace id"))
    }
}

impl Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes = <[u8; 16]>::deserialize(d)?;
            Self::from_bytes(bytes).ok_or_else(|| serde::de::Error::custom("all-zero trace id"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_round_trip_and_bad_ones_are_refused() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"4bf92f3577b34da6a3ce929d0e0e4736\"");
        assert_eq!(serde_json::from_str::<TraceId>(&json).unwrap(), t);
        let wire = postcard::to_allocvec(&t).unwrap();
        assert_eq!(postcard::from_bytes::<TraceId>(&wire).unwrap(), t);
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "zbf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_traceparent_gives_its_trace_id() {
        let t =
            TraceId::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(TraceId::from_traceparent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_task_id_is_a_trace_id() {
        let id = TaskId::new();
        let t = TraceId::from(id);
        assert_eq!(t.as_bytes(), id.as_uuid().as_bytes());
    }
}
