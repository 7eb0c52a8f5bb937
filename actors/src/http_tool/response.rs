//! The answer to an [`HttpTool`](super::HttpTool) request: the status as an output or an
//! error (with `Retry-After`), the body read up to its cap and decoded as JSON or text.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use wrangle::TaskError;

use super::guard::Refused;
use super::{refused, send_error, HttpBody, HttpToolOutput, Inner};

/// How much of an error response's body its message quotes.
const ERROR_QUOTE_BYTES: usize = 256;
/// The longest `Retry-After` passed on (the queue counts at most a day too).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

impl Inner {
    /// Sends `request` (following allowed redirects) and reads the answer.
    pub(super) async fn exchange(
        &self,
        request: reqwest::Request,
    ) -> Result<HttpToolOutput, TaskError> {
        let started = Instant::now();
        let mut response = self.client.execute(request).await.map_err(send_error)?;
        // The resolver and the literal check already vetted this address; a second look
        // at the connection itself costs nothing and catches any path around them.
        if let Some(peer) = response.remote_addr() {
            let ip = peer.ip();
            self.guard
                .check_ip(ip)
                .map_err(|kind| refused(Refused::Connected { ip, kind }))?;
        }
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            return Err(status_error(response).await);
        }
        let headers = self
            .response_headers
            .iter()
            .filter_map(|name| {
                let values: Vec<_> = response
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| (name.to_string(), values.join(", ")))
            })
            .collect();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        let url = response.url().to_string();
        let (bytes, truncated) = read_capped(&mut response, self.max_response_bytes).await?;
        let json = (is_json && !truncated)
            .then(|| serde_json::from_slice(&bytes).ok())
            .flatten();
        let body = match json {
            Some(value) => HttpBody::Json(value),
            None => HttpBody::Text(text(bytes)),
        };
        Ok(HttpToolOutput {
            status: status.as_u16(),
            url,
            headers,
            body,
            truncated,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// A 4xx or 5xx as an error: 429 and 503 retryable after `Retry-After`, other 5xx
/// retryable, 4xx permanent. The message quotes the start of the body.
async fn status_error(mut response: reqwest::Response) -> TaskError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after_seconds);
    let quote = match read_capped(&mut response, ERROR_QUOTE_BYTES).await {
        Ok((bytes, _)) if !bytes.is_empty() => format!(": {}", text(bytes).trim()),
        _ => String::new(),
    };
    let message = format!("HTTP {status}{quote}");
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            let error = TaskError::retryable(message);
            match retry_after {
                Some(after) => error.with_retry_after(after),
                None => error,
            }
        }
        s if s.is_server_error() => TaskError::retryable(message),
        _ => TaskError::permanent(message),
    }
}

/// `Retry-After` in its seconds form, capped at a day. The HTTP-date form is rare on a
/// 429 and is ignored (the queue's own backoff applies).
fn retry_after_seconds(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// True for `application/json` and `...+json` content types.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// Reads the body up to `cap` bytes; true when there was more (left unread).
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), TaskError> {
    // The announced length is the server's word: it only sizes the first allocation.
    let hint = response.content_length().unwrap_or(0).min(cap as u64) as usize;
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        TaskError::retryable(format!("response body cut short: {}", e.without_url()))
    })? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Bytes as text, invalid UTF-8 replaced.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonp"));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(retry_after_seconds(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_seconds("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
