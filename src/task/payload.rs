use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A task's input or output: a JSON document, held as bytes so that it moves between actors,
/// machines and the store without being parsed again.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(Bytes);

impl Payload {
    /// Serializes `value` to JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Serialize into a reused buffer, then copy out exactly the bytes written: a
        // million small queued payloads would otherwise each keep serde_json's 128-byte
        // starting buffer.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                serde_json::to_writer(&mut *buf, value)?;
                let out = Self(Bytes::copy_from_slice(&buf));
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::new();
                }
                Ok(out)
            }
            // A `Serialize` impl that encodes a payload itself: no shared buffer.
            Err(_) => Ok(Self(Bytes::copy_from_slice(&serde_json::to_vec(value)?))),
        })
    }

    /// Takes bytes that must already be valid JSON.
    pub fn from_json_bytes(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)?;
        Ok(Self(bytes))
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self(Bytes::from_static(b"null"))
    }

    /// Decodes the JSON into `T`. The error names the path of the offending field
    /// (for example `items[2].name: invalid type: integer, expected a string`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
    }

    /// The JSON as a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The raw JSON bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The size of the JSON in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload (never produced by `encode`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Self::encode(&value).expect("a serde_json::Value always serializes")
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 256;
        let text = String::from_utf8_lossy(&self.0[..self.0.len().min(SHOWN)]);
        if self.0.len() > SHOWN {
            write!(f, "Payload({text}... {} bytes)", self.0.len())
        } else {
            write!(f, "Payload({text})")
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // Embed the JSON document itself, not a string or a byte array.
            let raw: &serde_json::value::RawValue =
                serde_json::from_slice(&self.0).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
            Ok(Self(Bytes::from(raw.get().as_bytes().to_vec())))
        } else {
            let bytes = serde_bytes_compat::deserialize(deserializer)?;
            Ok(Self(Bytes::from(bytes)))
        }
    }
}

mod serde_bytes_compat {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        #[allow(dead_code)]
        pages: Vec<Page>,
    }
    #[derive(Debug, Deserialize)]
    struct Page {
        #[allow(dead_code)]
        number: u32,
    }

    #[test]
    fn decode_error_names_the_field_path() {
        let p = Payload::from(serde_json::json!({"pages": [{"number": 1}, {"number": "two"}]}));
        let err = p.decode::<Doc>().unwrap_err();
        assert!(err.starts_with("pages[1].number:"), "{err}");
    }

    #[test]
    fn json_round_trip_embeds_the_document() {
        let p = Payload::from(serde_json::json!({"a": [1, 2]}));
        let text = serde_json::to_string(&serde_json::json!({ "payload": p })).unwrap();
        assert_eq!(text, r#"{"payload":{"a":[1,2]}}"#);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        let again: Payload = serde_json::from_value(back["payload"].clone()).unwrap();
        assert_eq!(again.to_value(), serde_json::json!({"a": [1, 2]}));
    }

    #[test]
    fn rejects_bytes_that_are_not_json() {
        assert!(Payload::from_json_bytes(&b"{not json"[..]).is_err());
    }
}
