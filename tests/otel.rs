//! OpenTelemetry export (feature `otel`): a task submitted with a trace id has its `task`
//! span exported over OTLP/HTTP in that trace, with its `task_id`, to a collector that is an
//! axum route on 127.0.0.1 decoding what it gets with the OTLP protobuf messages.
//!
//! ```text
//! cargo test --features otel --test otel
//! ```
//!
//! Built only with the feature; CI runs it in its own step (`.ci/run`).
#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracing_subscriber::prelude::*;
use wrangle::prelude::*;
use wrangle::telemetry::{otlp_layer, OtelConfig};
use wrangle::TraceId;

/// What the collector received: one protobuf body per export request.
type Received = Arc<Mutex<Vec<Bytes>>>;

/// A tiny OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces`, bodies up to 4 MiB kept.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.lock().unwrap().push(body);
                // An empty ExportTraceServiceResponse: everything accepted.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        )
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

/// Every span the collector has decoded so far.
fn spans(received: &Received) -> Vec<Span> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| {
            ExportTraceServiceRequest::decode(body.as_ref())
                .expect("the exporter sends OTLP protobuf")
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

/// A string attribute of `span`.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_span_is_exported_in_the_trace_it_was_submitted_with() {
    let (endpoint, received) = collector().await;
    let (layer, guard) = otlp_layer(&OtelConfig {
        endpoint,
        service_name: "wrangle-test".into(),
        ..OtelConfig::default()
    })
    .unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(layer)
        .init();

    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 1,
            max_workers: 1,
            auto_scale: false,
            ..CoordinatorConfig::default()
        })
        .handler(
            "greet",
            handler_fn(|_ctx, name: String| async move {
                tracing::info!("greeting");
                Ok::<_, TaskError>(format!("hello, {name}"))
            }),
        )
        .start()
        .await
        .unwrap();

    // The trace id of a client's `traceparent` (W3C Trace Context's example).
    let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
    let handle = c
        .submit_async(TaskSpec::new("greet", "ada").unwrap().trace_id(trace))
        .await
        .unwrap();
    let greeting: String = handle.result(Duration::from_secs(10)).await.unwrap();
    assert_eq!(greeting, "hello, ada");
    // And one without: its trace is its own id.
    let own = c
        .submit_async(TaskSpec::new("greet", "bob").unwrap())
        .await
        .unwrap();
    let _: String = own.result(Duration::from_secs(10)).await.unwrap();

    // The attempt's span has ended once its result is out; flushing sends it and waits for
    // the collector's answer.
    guard.flush().await.unwrap();
    let spans = spans(&received);
    let task_spans: Vec<&Span> = spans.iter().filter(|s| s.name == "task").collect();
    let submitted = task_spans
        .iter()
        .find(|s| attribute(s, "task_id").as_deref() == Some(&handle.id.to_string()))
        .unwrap_or_else(|| {
            panic!(
                "no `task` span with task_id {} among {:?}",
                handle.id,
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(submitted.trace_id, trace.as_bytes().to_vec());
    assert_eq!(
        attribute(submitted, "trace_id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(attribute(submitted, "task_type").as_deref(), Some("greet"));
    // Its parent is the remote span standing for the task (never an empty id).
    assert_eq!(submitted.parent_span_id.len(), 8);
    assert_ne!(submitted.parent_span_id, vec![0; 8]);

    let unsubmitted = task_spans
        .iter()
        .find(|s| attribute(s, "task_id").as_deref() == Some(&own.id.to_string()))
        .expect("the second task's span was exported too");
    assert_eq!(
        unsubmitted.trace_id,
        TraceId::from(own.id).as_bytes().to_vec()
    );

    c.stop(true).await.unwrap();
    guard.shutdown().await.unwrap();
}
