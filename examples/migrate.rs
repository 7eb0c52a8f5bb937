//! Brings a store's schema up to date without starting anything else: for deployments that
//! migrate before rolling out new coordinators. The coordinator also migrates on start.
//!
//! ```text
//! cargo run --example migrate -- sqlite://wrangle.db
//! DATABASE_URL=postgres://wrangle:secret@db:5432/wrangle cargo run --example migrate
//! ```

use std::process::ExitCode;

use clap::Parser;

/// Brings a store's schema up to date (the coordinator also migrates on start).
#[derive(Debug, Parser)]
#[command(name = "migrate")]
struct Args {
    /// The store: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB.
    #[arg(
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    url: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args { url } = wrangle::settings::cli::parse();
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
