//! Brings a store's schema up to date without starting anything else: for deployments that
//! migrate before rolling out new coordinators. The coordinator also migrates on start.
//!
//! ```text
//! cargo run --example migrate -- sqlite://wrangle.db
//! DATABASE_URL=postgres://wrangle:secret@db:5432/wrangle cargo run --example migrate
//! ```

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let url = match std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
    {
        Some(url) if url != "-h" && url != "--help" => url,
        _ => {
            eprintln!("usage: migrate DATABASE_URL (or set DATABASE_URL)");
            return ExitCode::from(2);
        }
    };
    match wrangle::migrate(&url).await {
        Ok(report) if report.applied.is_empty() => {
            println!(
                "{} schema already at version {}",
                report.backend, report.version
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "{} schema migrated to version {} (applied {:?})",
                report.backend, report.version, report.applied
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
