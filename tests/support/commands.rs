//! Command requests for compute nodes and the parts of their answers, shared by the
//! backend tests.

use wrangle::compute::{CommandRequest, ComputeRequest, ComputeResponse};

/// A command without stdin.
pub(crate) fn cmd(argv: &[&str]) -> ComputeRequest {
    ComputeRequest::Command(CommandRequest {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        stdin: None,
    })
}

/// (exit code, stdout, stderr)
pub(crate) fn parts(r: ComputeResponse) -> (Option<i64>, String, String) {
    match r {
        ComputeResponse::Command {
            exit_code,
            stdout,
            stderr,
        } => (exit_code, stdout, stderr),
        other => panic!("not a command's answer: {other:?}"),
    }
}
