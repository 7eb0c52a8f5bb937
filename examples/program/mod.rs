//! What the coordinator and node programs share: their allocator, their log set-up, and
//! printing that survives a closed pipe (`| head`).

use wrangle::settings::cli::LogFormat;

/// mimalloc: the request path allocates a little per request, and glibc's malloc was a
/// quarter of the server's CPU under load (the library itself leaves the choice to you).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints a line to stdout; a closed stdout is no panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Prints a line to stderr; a closed stderr is no panic.
macro_rules! complain {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub(crate) use {complain, say};

/// The OpenTelemetry exporter, when one runs: flushed by [`finish`] before the program
/// exits (nothing without the `otel` feature).
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    guard: Option<wrangle::telemetry::OtelGuard>,
}

/// Log lines as `format` says, filtered by `RUST_LOG` (default `info`); with the `otel`
/// feature and an endpoint, spans also go to that OpenTelemetry collector (each task's in
/// its trace id). Call it inside the runtime: the exporter batches on it.
pub(crate) fn init_logging(
    format: LogFormat,
    #[cfg(feature = "otel")] otel_endpoint: Option<&str>,
    service: &str,
) -> Result<Telemetry, Box<dyn std::error::Error>> {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let logs = tracing_subscriber::registry().with(filter).with(lines);
    #[cfg(feature = "otel")]
    if let Some(endpoint) = otel_endpoint {
        let (layer, guard) = wrangle::telemetry::otlp_layer(&wrangle::telemetry::OtelConfig {
            endpoint: endpoint.into(),
            service_name: service.into(),
            ..Default::default()
        })?;
        logs.with(layer).init();
        return Ok(Telemetry { guard: Some(guard) });
    }
    logs.init();
    #[cfg(not(feature = "otel"))]
    let _ = service;
    Ok(Telemetry {
        #[cfg(feature = "otel")]
        guard: None,
    })
}

/// Flushes the OpenTelemetry exporter, if one runs.
pub(crate) fn finish(runtime: &tokio::runtime::Runtime, telemetry: Telemetry) {
    #[cfg(feature = "otel")]
    if let Some(guard) = telemetry.guard {
        if let Err(e) = runtime.block_on(guard.shutdown()) {
            complain!("{e}");
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (runtime, telemetry);
}
