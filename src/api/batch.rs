//! Reading a submit's body: its size checked, its tasks split out as raw JSON and counted
//! while parsing, each decoded with errors that name the field (`tasks[2].priority`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::value::RawValue;

use super::error::ApiError;

/// Reads a body, answering 413 past the limit.
pub(super) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(limit),
        _ => ApiError::bad("body", e.body_text()),
    })
}

/// A JSON body into `T`, the error naming the field at fault (`leases[2].token`).
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad(field, e.into_inner().to_string())
    })
}

/// The error a batch past its limit stops the parse with.
const TOO_MANY: &str = "too many tasks";

/// A JSON array read as raw elements, refused as soon as it holds more than `max`: the
/// count is checked while parsing, so a body of a million tiny tasks is never built into a
/// million values.
struct BoundedArray {
    max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BoundedArray {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BoundedArray {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of tasks")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// A parse error, or the batch limit that stopped the parse.
fn invalid_batch(e: serde_json::Error, max: usize) -> ApiError {
    if e.to_string().starts_with(TOO_MANY) {
        ApiError::bad(
            "tasks",
            format!("more than {max} tasks in one request; at most {max}"),
        )
    } else {
        ApiError::bad("body", format!("invalid JSON: {e}"))
    }
}

/// An array of at most `max` raw elements, and nothing after it.
fn bounded_array(raw: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(raw);
    let items = BoundedArray { max }
        .deserialize(&mut de)
        .map_err(|e| invalid_batch(e, max))?;
    de.end().map_err(|e| invalid_batch(e, max))?;
    Ok(items)
}

/// Each element with the path that names it (`tasks[2].`).
fn numbered<'a>(items: Vec<&'a RawValue>, prefix: &str) -> Vec<(String, &'a RawValue)> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("{prefix}[{i}]."), v))
        .collect()
}

/// Splits a body (one task, an array, or `{"tasks": [...]}`) into its tasks' raw JSON,
/// each with the path that names it in errors (`[2].`, `tasks[2].`).
pub(super) fn split_batch(body: &[u8], max: usize) -> Result<Vec<(String, &RawValue)>, ApiError> {
    let invalid = |e: serde_json::Error| invalid_batch(e, max);
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let items = match start.map(|i| body[i]) {
        Some(b'[') => numbered(bounded_array(body, max)?, ""),
        Some(b'{') => {
            // One pass over the object that keeps only `tasks`, raw; the rest is skipped
            // unread (a single task is decoded once, later, straight from the body).
            #[derive(serde::Deserialize)]
            struct Probe<'a> {
                #[serde(borrow)]
                tasks: Option<&'a RawValue>,
            }
            let probe: Probe<'_> = serde_json::from_slice(body).map_err(invalid)?;
            match probe.tasks {
                Some(tasks) if tasks.get().trim_start().starts_with('[') => {
                    numbered(bounded_array(tasks.get().as_bytes(), max)?, "tasks")
                }
                Some(_) => return Err(ApiError::bad("tasks", "expected an array of tasks")),
                None => {
                    let whole: &RawValue = serde_json::from_slice(body).map_err(invalid)?;
                    vec![(String::new(), whole)]
                }
            }
        }
        Some(_) => {
            // Still parse it, so malformed JSON is reported as such.
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(invalid)?;
            return Err(ApiError::bad(
                "body",
                "expected a task object or an array of tasks",
            ));
        }
        None => return Err(ApiError::bad("body", "invalid JSON: the body is empty")),
    };
    Ok(items)
}

/// Decodes one item of [`split_batch`] straight from its raw JSON (already checked as JSON
/// there, so only its shape can be wrong): an error names the field by its path.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    raw: &RawValue,
    at: &str,
) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        // The field's path says where; the position within the item would only confuse.
        let inner = e.inner();
        let mut message = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        if inner.line() != 0 && message.ends_with(&position) {
            message.truncate(message.len() - position.len());
        }
        let mut path = e.path().to_string();
        // serde reports a missing or unknown field at the object's own path: name it.
        for marker in ["missing field `", "unknown field `"] {
            if let Some(rest) = message.strip_prefix(marker) {
                let name = rest.split('`').next().unwrap_or_default();
                path = match path.as_str() {
                    "." => name.to_string(),
                    p if p.ends_with(name) => p.to_string(),
                    p => format!("{p}.{name}"),
                };
            }
        }
        let field = match path.as_str() {
            "." => at.trim_end_matches('.').to_string(),
            p => format!("{at}{p}"),
        };
        let field = if field.is_empty() {
            "body".to_string()
        } else {
            field
        };
        ApiError::bad(field, message)
    })
}
