//! The programs' command lines, parsed by clap: every setting is a flag, and each flag's
//! environment variable is the setting's `WRANGLE_*` name. [`CoordinatorArgs`] is the
//! coordinator program's, [`NodeArgs`] the node program's; both read the same settings file
//! (`--config`) under them.
//!
//! Secrets (the API token, the cluster cookie) come as themselves or as a file holding them
//! ([`SecretArgs`]); their values show as `<redacted>` in `Debug` and are never printed in
//! `--help`.
//!
//! A program embedding wrangle can take the coordinator's command line whole, beside its
//! own flags:
//!
//! ```no_run
//! use clap::Parser;
//! use wrangle::settings::cli::CoordinatorArgs;
//!
//! /// My service, with a wrangle coordinator inside.
//! #[derive(Debug, Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     wrangle: CoordinatorArgs,
//!     /// My own flag.
//!     #[arg(long)]
//!     greeting: Option<String>,
//! }
//!
//! let cli: Cli = wrangle::settings::cli::parse();
//! let settings = cli.wrangle.settings()?; // the file, the environment, the flags; checked
//! let config = settings.coordinator_config();
//! # Ok::<(), wrangle::Error>(())
//! ```

mod coordinator;
mod node;
mod secret;

pub use coordinator::{ApiArgs, ClusterArgs, ComputeArgs, CoordinatorArgs, StoreArgs, WorkerArgs};
pub use node::NodeArgs;
pub use secret::{Cookie, Secret, SecretArgs, SecretName, Token};

/// How the programs write their log lines (`--log-format`, `WRANGLE_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (a task's `trace_id`).
    Json,
}

/// The `--help` text on where settings come from, shared by the programs.
pub const PRECEDENCE: &str = "\
Settings come in layers, each overriding the one before: the defaults, the settings file \
(--config, else ./wrangle.toml when present), the environment variables shown with each \
flag, then the flags. The file's keys are the flags' names in snake case (--max-workers: \
`max_workers = 16`); the compute flags go under [compute] without their prefix, the node \
program's under [node].

Secrets: a --token or --cookie flag shows in `ps` to every user of the machine; prefer \
the *-file flags or the environment. A secret given on the command line wins over one \
from the environment; a file wins over a value from the same place.";

/// Parses the process's command line and environment into `P`, as `P::parse()` does
/// (`--help` and bad values print and exit; a closed stdout is no panic), except that a bad
/// value read from an environment variable is said to come from it: clap's message names
/// only the flag.
pub fn parse<P: clap::Parser>() -> P {
    P::try_parse().unwrap_or_else(|mut e| {
        let mut cmd = P::command();
        // Built, so that its arguments show as clap's messages show them.
        cmd.build();
        if let Some(var) = bad_value_from_env(&cmd, &e) {
            e.insert(
                clap::error::ContextKind::Suggested,
                clap::error::ContextValue::StyledStrs(vec![format!(
                    "the value came from the environment variable {var}"
                )
                .into()]),
            );
        }
        e.exit()
    })
}

/// The variable a bad value came from: the flag `e` names was not on the command line and
/// its variable is set.
fn bad_value_from_env(cmd: &clap::Command, e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let arg = cmd.get_arguments().find(|a| a.to_string() == *shown)?;
    let flag = format!("--{}", arg.get_long()?);
    let given = std::env::args_os().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    let var = arg.get_env()?.to_str()?;
    (!given && std::env::var_os(var).is_some()).then(|| var.to_string())
}

/// Sets `dst` to `src` when `src` is set: a layer overriding the one below.
fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
    if let Some(v) = src {
        *dst = v.clone();
    }
}

/// A comma-separated list from a flag or variable, trimmed, without empty items
/// (`WRANGLE_LABELS=` is an empty list).
fn set_list(dst: &mut Vec<String>, src: &Option<Vec<String>>) {
    if let Some(items) = src {
        *dst = items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
}

#[cfg(test)]
pub(crate) mod tests;
