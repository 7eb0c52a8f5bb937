//! The Python client's pytest suite (`clients/python/tests`), run against the real
//! coordinator program: submits and waits (one, many, streamed), errors as exceptions with
//! the API's code and field, tokens, retries on a full queue, workflows, Python functions
//! run as handlers through the HTTP worker protocol, and the client and worker following
//! the leading coordinator (through an in-test standby, past a dead address, and across a
//! coordinator killed and replaced on the same database).
//!
//! Needs `python3` with `venv`; the test makes a virtualenv with `httpx` and `pytest` under
//! `~/.cache/wrangle-pyclient-venv` on its first run (from the package registry). Without
//! Python the test says so and passes, except under `CI=true`, where it fails.

#[path = "support/programs.rs"]
#[allow(dead_code)]
mod programs;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The virtualenv with the client's test dependencies, made when missing.
fn venv() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let venv = std::env::var_os("WRANGLE_PYCLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&home).join(".cache/wrangle-pyclient-venv"));
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import httpx, pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("python3 is not available: {e}"))?;
    if !made.success() {
        return Err("python3 -m venv failed (Debian: apt-get install python3-venv)".into());
    }
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "httpx>=0.25,<1", "pytest>=7"])
        .status()
        .map_err(|e| format!("pip did not start: {e}"))?;
    if !installed.success() || !ready(&python) {
        return Err("pip could not install httpx and pytest".into());
    }
    Ok(python)
}

#[test]
fn the_python_client_passes_its_tests_against_the_coordinator_program() {
    let python = match venv() {
        Ok(p) => p,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the Python client tests must run in CI: {why}")
        }
        Err(why) => {
            eprintln!("Python client tests not run: {why}");
            return;
        }
    };
    let coordinator = programs::example_binary("coordinator");
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&client)
        .env("PYTHONPATH", client.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("WRANGLE_COORDINATOR_BIN", &coordinator)
        .status()
        .expect("pytest starts");
    assert!(
        status.success(),
        "the Python client's tests failed (output above)"
    );
}
