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

/// Log lines as `format` says, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
    }
}
