//! OpenTelemetry export of wrangle's spans (feature `otel`): a `tracing_subscriber` layer that
//! sends spans to an OTLP/HTTP collector, and the guard that flushes it.
//!
//! Each attempt runs in a `task` span (fields `task_id`, `task_type`, `attempt`, `trace_id`,
//! `worker`). Once [`otlp_layer`] has built a layer, the worker gives every `task` span a
//! remote OTel parent in the task's own [`TraceId`], so a client that submitted with a
//! `traceparent` finds the task's spans in its own trace. The parent's span id is taken from
//! the task id (the same for every attempt of a task), not from the client's `traceparent`:
//! wrangle keeps only the trace id of what it was given.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Inside the tokio runtime: the exporter batches on it.
//! let (layer, guard) = wrangle::telemetry::otlp_layer(&wrangle::telemetry::OtelConfig {
//!     endpoint: "http://127.0.0.1:4318".into(),
//!     ..Default::default()
//! })?;
//! tracing_subscriber::registry().with(layer).init();
//! // ... run the coordinator ...
//! guard.shutdown().await?;
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

use crate::task::{TaskId, TraceId};

/// Where and as whom spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP base URL; spans go to `<endpoint>/v1/traces` (an endpoint
    /// already ending in `/v1/traces` is kept as it is). Plain `http://` only, with no user
    /// or password in it (headers such as an API key go in `OTEL_EXPORTER_OTLP_HEADERS`).
    /// Default `http://127.0.0.1:4318`, a collector on this machine.
    pub endpoint: String,
    /// The `service.name` resource attribute. Default `wrangle`.
    pub service_name: String,
    /// How long one export request may take, reading the answer included. Default 10 s.
    pub export_timeout: Duration,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4318".into(),
            service_name: "wrangle".into(),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the OTel layer could not be built or flushed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not a usable collector URL.
    #[error("invalid otel endpoint: {0}")]
    Endpoint(String),
    /// The exporter could not be built (outside a tokio runtime, for one).
    #[error("otel exporter: {0}")]
    Exporter(String),
    /// Flushing or shutting down did not succeed (the collector refused or was unreachable).
    #[error("otel export: {0}")]
    Export(String),
}

/// Whether a layer from [`otlp_layer`] exists: until then a `task` span gets no OTel parent,
/// and an attempt pays one relaxed load for this feature.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A `tracing_subscriber` layer that exports spans to `config.endpoint` over OTLP/HTTP
/// (protobuf), batched on the current tokio runtime, and the guard that flushes it. Call it
/// inside the runtime that will run the coordinator or node; keep the guard and call
/// [`OtelGuard::shutdown`] before the runtime ends, or the last spans are lost.
pub fn otlp_layer<S>(
    config: &OtelConfig,
) -> Result<(impl tracing_subscriber::Layer<S>, OtelGuard), TelemetryError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let endpoint = traces_url(&config.endpoint)?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::Exporter(
            "otlp_layer must be called inside a tokio runtime".into(),
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("wrangle"));
    INSTALLED.store(true, Ordering::Relaxed);
    Ok((
        layer,
        OtelGuard {
            provider: Some(provider),
        },
    ))
}

/// `endpoint` checked, as the URL spans are posted to.
fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        TelemetryError::Endpoint(format!(
            "expected a URL such as http://127.0.0.1:4318 ({e})"
        ))
    })?;
    if url.scheme() != "http" {
        return Err(TelemetryError::Endpoint(format!(
            "expected an http:// URL, got {}:// (the exporter speaks plain HTTP to a local collector)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL back: it holds a secret.
        return Err(TelemetryError::Endpoint(
            "a user or password in the URL would be logged; use OTEL_EXPORTER_OTLP_HEADERS".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(TelemetryError::Endpoint(
            "expected no query or fragment".into(),
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Flushes the exporter: keep it for the life of the program and call [`Self::shutdown`]
/// (inside the runtime) at its end. Dropped without it, it shuts the exporter down as best
/// it can without blocking the runtime.
#[derive(Debug)]
pub struct OtelGuard {
    /// The tracer provider behind the layer; `None` once shut down.
    provider: Option<SdkTracerProvider>,
}

impl OtelGuard {
    /// Exports every span that has ended so far, and waits for the collector's answer.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        // The SDK blocks the calling thread until its batch task answers.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|e| TelemetryError::Export(e.to_string()))?
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }

    /// Exports what is left and stops the exporter.
    pub async fn shutdown(mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(|e| TelemetryError::Export(e.to_string()))?
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Shutting down blocks until the batch task (on the runtime) answers: never on a
        // thread the runtime needs to make progress.
        let shutdown = move || {
            let _ = provider.shutdown();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(shutdown);
            }
            Err(_) => shutdown(),
        }
    }
}

/// Makes `span` (a `task` span, just created) a child of a remote span in `trace_id`, so its
/// OTel trace id is the task's [`TraceId`]; the parent span id comes from `task_id`. Does
/// nothing until [`otlp_layer`] has built a layer, or when the span is disabled.
pub(crate) fn set_task_parent(span: &tracing::Span, trace_id: TraceId, task_id: TaskId) {
    if !INSTALLED.load(Ordering::Relaxed) || span.is_disabled() {
        return;
    }
    let parent = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(*trace_id.as_bytes()),
        parent_span_id(task_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // No OTel layer under this span's subscriber (another subscriber in this thread): fine.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

/// The remote parent's span id: the task id's last 8 bytes (UUIDv7's random bits), the same
/// for every attempt of the task; never zero (invalid in W3C Trace Context).
fn parent_span_id(task_id: TaskId) -> SpanId {
    let bytes = task_id.as_uuid().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..]);
    if id == [0; 8] {
        id[7] = 1;
    }
    SpanId::from_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_get_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        for bad in [
            "",
            "127.0.0.1:4318",
            "https://collector:4318",
            "http://user:secret@collector:4318",
            "http://collector:4318/?key=secret",
        ] {
            let e = traces_url(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid otel endpoint"), "{bad}: {e}");
            assert!(
                !e.contains("secret"),
                "{bad}: the error shows the secret: {e}"
            );
        }
    }

    #[test]
    fn the_parent_span_id_is_the_task_ids_tail_and_never_zero() {
        let id = TaskId::new();
        let span_id = parent_span_id(id);
        assert_eq!(span_id.to_bytes(), id.as_uuid().as_bytes()[8..]);
        assert_ne!(span_id, SpanId::INVALID);
    }
}
