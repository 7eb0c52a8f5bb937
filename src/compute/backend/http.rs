//! HTTP nodes through reqwest: one client per node (its pool keeps connections alive
//! between requests), JSON in and out, streamed answers framed as server-sent events or
//! NDJSON, and statuses mapped to what a retry can fix.
//!
//! Redirects are not followed: a node answering elsewhere is refused, not trusted.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;

use super::Backend;
use crate::compute::node::ComputeNode;
use crate::compute::request::{
    ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, HttpMethod, HttpRequest,
    StreamChunk, StreamFormat, StreamSink,
};
use crate::error::Error;

/// Largest response body read.
const MAX_BODY: usize = 16 << 20;
/// Most events read from one stream.
const MAX_EVENTS: usize = 100_000;
/// Most of an error body quoted in the error.
const ERROR_QUOTE: usize = 512;

pub(crate) struct HttpBackend {
    client: reqwest::Client,
    base: String,
}

impl HttpBackend {
    /// A client for one node; `token`, when given, is sent as a bearer token (marked
    /// sensitive, so it never appears in debug output).
    pub(crate) fn new(
        base: &str,
        node: &ComputeNode,
        token: Option<String>,
    ) -> Result<Self, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    Error::invalid("credential", "the token is not a valid header value")
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(node.concurrency().min(1024))
            .connect_timeout(Duration::from_secs(10).min(node.request_timeout()))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::invalid("endpoint", format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.to_string(),
        })
    }
}

impl Backend for HttpBackend {
    fn execute(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> BoxFuture<'static, Result<ComputeResponse, ComputeError>> {
        let ComputeRequest::Http(request) = request else {
            return Box::pin(async {
                Err(ComputeError::invalid(
                    "an HTTP node runs HTTP requests, not commands",
                ))
            });
        };
        let call = self.call(&request);
        Box::pin(async move {
            let response = call.send().await.map_err(transport_error)?;
            let status = response.status();
            if !status.is_success() {
                return Err(status_error(response).await);
            }
            match request.stream {
                None => Ok(ComputeResponse::Http {
                    status: status.as_u16(),
                    body: read_body(response).await?,
                    events: Vec::new(),
                }),
                Some(format) => read_stream(response, format, sink).await,
            }
        })
    }

    fn health(&self, timeout: Duration) -> BoxFuture<'static, Result<(), String>> {
        let call = self.client.get(&self.base).timeout(timeout);
        Box::pin(async move {
            match call.send().await {
                // Any answer short of a server error shows the server is up.
                Ok(r) if r.status().as_u16() < 500 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(transport_error(e).message),
            }
        })
    }
}

impl HttpBackend {
    fn call(&self, r: &HttpRequest) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, r.path);
        let builder = match r.method {
            HttpMethod::Get => self.client.get(url),
            HttpMethod::Post => self.client.post(url),
            HttpMethod::Put => self.client.put(url),
            HttpMethod::Delete => self.client.delete(url),
        };
        match &r.body {
            Some(body) => builder.json(body),
            None => builder,
        }
    }
}

fn transport_error(e: reqwest::Error) -> ComputeError {
    // reqwest's messages name the URL, which holds no secret (endpoints carry none).
    let what = std::error::Error::source(&e)
        .map(|s| format!("{e}: {s}"))
        .unwrap_or_else(|| e.to_string());
    let kind = if e.is_timeout() {
        ComputeErrorKind::Timeout
    } else if e.is_body() || e.is_decode() {
        ComputeErrorKind::Protocol
    } else {
        ComputeErrorKind::Unavailable
    };
    ComputeError::new(kind, what)
}

/// A non-success status as an error: 429 is busy, every 5xx (503 too) a failure of the
/// node that counts towards its breaker, other 4xx a refusal no retry fixes. A
/// `Retry-After` is kept (a 429's or a 503's).
async fn status_error(response: reqwest::Response) -> ComputeError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => ComputeErrorKind::Busy,
        s if s.is_server_error() => ComputeErrorKind::Remote,
        _ => ComputeErrorKind::Rejected,
    };
    let quote = match read_body(response).await {
        Ok(body) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_QUOTE)]).into_owned();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        }
        Err(_) => String::new(),
    };
    ComputeError {
        kind,
        message: format!("HTTP {status}{quote}"),
        retry_after,
    }
}

/// `Retry-After` as seconds or an HTTP date; capped at one day.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(after.min(Duration::from_secs(86_400)))
}

async fn read_body(response: reqwest::Response) -> Result<Bytes, ComputeError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(ComputeError::protocol("response body is over 16 MiB"));
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ComputeError::protocol(format!(
                "response cut short: {}",
                transport_error(e).message
            ))
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ComputeError::protocol("response body is over 16 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads a streamed answer, handing each event to `sink` as it completes.
async fn read_stream(
    response: reqwest::Response,
    format: StreamFormat,
    sink: Option<StreamSink>,
) -> Result<ComputeResponse, ComputeError> {
    let status = response.status().as_u16();
    let mut framer = Framer::new(format);
    let mut events = Vec::new();
    let mut stream = response.bytes_stream();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ComputeError::protocol(format!("stream cut short: {}", transport_error(e).message))
        })?;
        read += chunk.len();
        if read > MAX_BODY {
            return Err(ComputeError::protocol("stream is over 16 MiB"));
        }
        for event in framer.push(&chunk)? {
            if events.len() >= MAX_EVENTS {
                return Err(ComputeError::protocol("stream has over 100000 events"));
            }
            if let Some(sink) = &sink {
                // A reader that went away stops getting progress; the result still comes.
                let _ = sink.send(StreamChunk::Event(event.clone())).await;
            }
            events.push(event);
        }
        if framer.done {
            break;
        }
    }
    let rest = framer.finish()?;
    Ok(ComputeResponse::Http {
        status,
        body: rest,
        events,
    })
}

/// Splits a byte stream into events: SSE `data:` payloads (an event ends at a blank line;
/// `data: [DONE]` ends the stream) or NDJSON lines (each checked to be JSON).
pub(crate) struct Framer {
    format: StreamFormat,
    line: Vec<u8>,
    data: Option<String>,
    pub(crate) done: bool,
}

impl Framer {
    pub(crate) fn new(format: StreamFormat) -> Self {
        Self {
            format,
            line: Vec::new(),
            data: None,
            done: false,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, ComputeError> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.done {
                break;
            }
            if b != b'\n' {
                if self.line.len() >= MAX_BODY {
                    return Err(ComputeError::protocol("stream line is over 16 MiB"));
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8(line)
                .map_err(|_| ComputeError::protocol("stream is not UTF-8"))?;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(event) = self.line_done(line)? {
                out.push(event);
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &str) -> Result<Option<String>, ComputeError> {
        match self.format {
            StreamFormat::Ndjson => {
                if line.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str::<serde::de::IgnoredAny>(line)
                    .map_err(|e| ComputeError::protocol(format!("stream line is not JSON: {e}")))?;
                Ok(Some(line.to_string()))
            }
            StreamFormat::Sse => {
                if line.is_empty() {
                    let event = self.data.take();
                    if event.as_deref() == Some("[DONE]") {
                        self.done = true;
                        return Ok(None);
                    }
                    return Ok(event);
                }
                if let Some(value) = line.strip_prefix("data:") {
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match &mut self.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => self.data = Some(value.to_string()),
                    }
                }
                // Comments (`:`), `event:`, `id:` and `retry:` lines carry no data.
                Ok(None)
            }
        }
    }

    /// What is left when the stream ends: an unfinished last line is an event too.
    pub(crate) fn finish(mut self) -> Result<Bytes, ComputeError> {
        if !self.line.is_empty() && !self.done {
            let rest = std::mem::take(&mut self.line);
            if self.format == StreamFormat::Ndjson {
                let text = String::from_utf8(rest.clone())
                    .map_err(|_| ComputeError::protocol("stream is not UTF-8"))?;
                self.line_done(&text)?;
            }
            return Ok(Bytes::from(rest));
        }
        Ok(Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_end_at_done() {
        let mut f = Framer::new(StreamFormat::Sse);
        let mut events = f.push(b": comment\ndata: {\"a\"").unwrap();
        events.extend(f.push(b":1}\r\n\r\ndata: x\ndata: y\n\n").unwrap());
        events.extend(f.push(b"data: [DONE]\n\ndata: after\n\n").unwrap());
        assert_eq!(events, vec!["{\"a\":1}".to_string(), "x\ny".to_string()]);
        assert!(f.done);
    }

    #[test]
    fn ndjson_lines_must_be_json() {
        let mut f = Framer::new(StreamFormat::Ndjson);
        assert_eq!(f.push(b"{\"a\":1}\n\n{\"b\"").unwrap(), vec!["{\"a\":1}"]);
        assert_eq!(f.push(b":2}\n").unwrap(), vec!["{\"b\":2}"]);
        let e = f.push(b"not json\n").unwrap_err();
        assert_eq!(e.kind, ComputeErrorKind::Protocol);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(Duration::from_secs(86_400))
        );
    }
}
