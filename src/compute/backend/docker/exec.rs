//! A command exec'd in the node's running container: create the exec (tagged with a
//! marker in its environment), start it attached, read its output, read its exit code.
//!
//! The engine has no call that stops an exec. When the request is dropped (timeout,
//! caller gone), a [`Kill`] guard runs a second exec, `sh -c`, that sends SIGKILL to every
//! process of the container whose environment holds the marker: the command and what it
//! started. That needs `sh` and `grep` in the container (busybox has both); in a container
//! without them the command runs on to its end, its output no longer read.

use std::sync::Arc;
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;

use super::{container_running, converse, engine_error, Engine, Output};
use crate::compute::request::{CommandRequest, ComputeError, ComputeResponse, StreamSink};

/// The environment variable that marks an exec's processes.
const MARKER: &str = "WRANGLE_EXEC";
/// How long the state of a container is watched after an exec of it was killed by a
/// signal, for the engine to record that the container itself stopped.
const SETTLE: Duration = Duration::from_secs(2);
/// Kills the processes whose environment holds `$MARKER=$0`.
const KILL_SCRIPT: &str = r#"for p in /proc/[0-9]*; do if grep -q "WRANGLE_EXEC=$0" "$p/environ" 2>/dev/null; then kill -9 "${p#/proc/}" 2>/dev/null; fi; done"#;

pub(super) async fn exec(
    engine: Arc<Engine>,
    container: String,
    command: CommandRequest,
    sink: Option<StreamSink>,
) -> Result<ComputeResponse, ComputeError> {
    let docker = engine.client().await?;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let config = ExecConfig {
        attach_stdin: Some(command.stdin.is_some()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        env: Some(vec![format!("{MARKER}={marker}")]),
        cmd: Some(command.argv),
        ..ExecConfig::default()
    };
    let created = match docker.create_exec(&container, config).await {
        Ok(created) => created,
        Err(e) => return Err(stopped_or(&docker, &container, engine_error(e)).await),
    };
    let mut kill = Kill {
        docker: docker.clone(),
        container: container.clone(),
        marker,
        armed: true,
    };
    let started = match docker
        .start_exec(&created.id, None::<StartExecOptions>)
        .await
    {
        Ok(started) => started,
        Err(e) => return Err(stopped_or(&docker, &container, engine_error(e)).await),
    };
    let StartExecResults::Attached { output, input } = started else {
        return Err(ComputeError::protocol(
            "the engine started the exec detached",
        ));
    };
    let mut out = Output::new(sink, &engine.node_id);
    converse(output, input, command.stdin, &mut out).await?;
    let exit_code = exit_code(&docker, &created.id).await?;
    kill.armed = false;
    // A command cut short because its container stopped did not run to its end: another
    // node may run it. A kill by signal may be the container's end, which the engine
    // records a moment after the exec's: its state is given a short while to settle. So
    // is 126, the code of an exec the runtime could not start, which is what an exec
    // started as its container is being stopped gets (seen under `docker stop`).
    let killed = exit_code.is_none_or(|code| code > 128 || code == 126);
    let settle = if killed { SETTLE } else { Duration::ZERO };
    if let Err(why) = stopped_within(&docker, &container, settle).await {
        return Err(ComputeError::unavailable(format!(
            "{why} (it stopped while the command ran; exit code {exit_code:?})"
        )));
    }
    Ok(out.answer(exit_code))
}

/// `error`, unless the container is not running: then that is the reason given.
async fn stopped_or(docker: &Docker, container: &str, error: ComputeError) -> ComputeError {
    match container_running(docker, container).await {
        Err(why) => ComputeError::unavailable(why),
        Ok(()) => error,
    }
}

/// `Err` with the reason as soon as the container is seen not running within `settle`.
async fn stopped_within(docker: &Docker, container: &str, settle: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        container_running(docker, container).await?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The exec's exit code, once the engine has it: its output can end a moment before the
/// engine records the exit, or long before (a program that closed its output and runs on),
/// so it is polled with a growing interval; the node's timeout bounds the wait.
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<Option<i64>, ComputeError> {
    let mut pause = Duration::from_millis(2);
    loop {
        let info = docker.inspect_exec(exec_id).await.map_err(engine_error)?;
        if info.running != Some(true) {
            return Ok(info.exit_code);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Kills an exec's processes when dropped still armed.
struct Kill {
    docker: Docker,
    container: String,
    marker: String,
    armed: bool,
}

impl Drop for Kill {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(container = %self.container, "no runtime to kill the exec with");
            return;
        };
        let (docker, container, marker) = (
            self.docker.clone(),
            self.container.clone(),
            self.marker.clone(),
        );
        runtime.spawn(async move {
            let config = ExecConfig {
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    KILL_SCRIPT.into(),
                    marker.clone(),
                ]),
                ..ExecConfig::default()
            };
            let detached = StartExecOptions {
                detach: true,
                ..StartExecOptions::default()
            };
            let killed = match docker.create_exec(&container, config).await {
                Ok(e) => docker.start_exec(&e.id, Some(detached)).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = killed {
                tracing::warn!(%container, error = %e, "exec not killed");
            }
        });
    }
}
