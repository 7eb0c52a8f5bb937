//! [`Shell`]: runs a program on this machine (`shell`), with no shell in between unless
//! asked for, a cleared environment, a time limit, capped output, and its whole process
//! group stopped when the task ends.
//!
//! The program is started in a process group of its own (`process_group(0)`): on a timeout,
//! a cancellation, or when the program exits and leaves children behind, the group is sent
//! SIGTERM and, after [`Shell::kill_grace`], SIGKILL. Nothing it started outlives the task
//! (short of a process that leaves the group on purpose, with `setsid`).
//!
//! Remote runs (SSH, containers, pods) are [`RemoteCommand`](crate::RemoteCommand)'s job:
//! this handler only runs local processes.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wrangle::{TaskContext, TaskError, TaskHandler};

/// Longest `program` (a path or name), in bytes.
const MAX_PROGRAM_BYTES: usize = 4096;
/// Longest `program` when it is a script for `sh -c` (`shell: true`), in bytes.
const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Most `args`.
const MAX_ARGS: usize = 1024;
/// Longest single argument, in bytes.
const MAX_ARG_BYTES: usize = 64 * 1024;
/// Most `env` entries.
const MAX_ENV: usize = 64;
/// Longest `env` value, in bytes.
const MAX_ENV_VALUE_BYTES: usize = 64 * 1024;
/// Longest `cwd`, in bytes.
const MAX_CWD_BYTES: usize = 4096;
/// Largest `stdin`, in bytes.
const MAX_STDIN_BYTES: usize = 1024 * 1024;
/// How much of a pipe is read at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// Input of [`Shell`].
///
/// Bounds (a task past one is refused, permanently, naming the field): `program` at most
/// 4 KiB (64 KiB with `shell: true`), at most 1024 `args` of 64 KiB each, at most 64 `env`
/// entries of 64 KiB each, `cwd` at most 4 KiB, `stdin` at most 1 MiB, `timeout_ms` from 1
/// to the handler's [`Shell::max_timeout`]. No string may hold a NUL byte.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ShellInput {
    /// The program to run: a path, or a name looked up in the allowed `PATH`. With
    /// `shell: true`, a script for `sh -c`.
    pub program: String,
    /// Its arguments, passed as they are (no expansion, no splitting, no quoting). With
    /// `shell: true` they are the script's `$1`, `$2`, ...
    #[serde(default)]
    pub args: Vec<String>,
    /// Run `program` as a script with `sh -c`. Default false.
    ///
    /// **Dangerous**: the shell expands, splits and runs whatever `program` holds, so text
    /// from anyone else must never reach it. Pass such text in `args` and refer to it as
    /// `"$1"`, or better leave this off.
    #[serde(default)]
    pub shell: bool,
    /// The working directory. Default: the worker's own.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Environment variables to set. Only names in the handler's allowlist
    /// ([`Shell::env_allowlist`]) are accepted; they override the worker's own values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the program may run, in milliseconds. Default: the handler's
    /// [`Shell::default_timeout`] (60 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Written to the program's standard input, which is then closed. Default: an empty,
    /// closed standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

/// What [`Shell`] returns. A non-zero exit, a signal and a timeout are all answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOutput {
    /// The exit code; `None` when a signal ended the program.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if one did.
    pub signal: Option<i32>,
    /// Standard output, up to the handler's cap (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error, up to the handler's cap (invalid UTF-8 replaced).
    pub stderr: String,
    /// True when standard output went past the cap; the rest was read and discarded.
    pub stdout_truncated: bool,
    /// True when standard error went past the cap; the rest was read and discarded.
    pub stderr_truncated: bool,
    /// From start to exit, in milliseconds.
    pub duration_ms: u64,
    /// True when the program ran past `timeout_ms` and was stopped; `stdout` and `stderr`
    /// hold what it wrote until then.
    pub timed_out: bool,
}

/// Runs a local program (`shell`): no shell unless `shell: true`, a cleared environment but
/// for [`Shell::env_allowlist`], a time limit, output capped at [`Shell::max_output_bytes`],
/// and its own process group, sent SIGTERM then (after [`Shell::kill_grace`]) SIGKILL when
/// it times out, is cancelled, or exits leaving processes behind. See [`ShellInput`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wrangle::{Coordinator, TaskSpec};
/// use wrangle_actors::{Shell, ShellOutput};
///
/// let coordinator = Coordinator::builder()
///     .handler("shell", Shell { max_output_bytes: 64 * 1024, ..Shell::default() })
///     .start()
///     .await?;
/// let input = serde_json::json!({
///     "program": "git",
///     "args": ["log", "-1", "--format=%H"],
///     "cwd": "/srv/repo",
///     "timeout_ms": 10_000,
/// });
/// let out: ShellOutput = coordinator
///     .submit_async(TaskSpec::new("shell", &input)?)
///     .await?
///     .result(Duration::from_secs(15))
///     .await?;
/// println!("exit {:?}: {}", out.exit_code, out.stdout);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Shell {
    /// Environment variables the program may see: the worker's values of these names, or the
    /// task's when it sets them. Everything else is cleared. Default `PATH`, `HOME`, `LANG`.
    pub env_allowlist: Vec<String>,
    /// How much of standard output, and of standard error, is kept. Default 1 MiB each.
    pub max_output_bytes: usize,
    /// The time limit of a task that gives no `timeout_ms`. Default 60 s.
    pub default_timeout: Duration,
    /// The largest `timeout_ms` accepted. Default 1 hour.
    pub max_timeout: Duration,
    /// How long the process group has between SIGTERM and SIGKILL. Default 2 s.
    pub kill_grace: Duration,
    /// When set, the only programs it runs (compared with `program` as written), and never
    /// a script (`shell: true` is refused): what an agent's shell tool needs, since a model
    /// chooses its input. Default `None` (any program).
    pub allowed_programs: Option<Vec<String>>,
}

impl Default for Shell {
    fn default() -> Self {
        Self {
            env_allowlist: ["PATH", "HOME", "LANG"].map(String::from).to_vec(),
            max_output_bytes: 1024 * 1024,
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_secs(2),
            allowed_programs: None,
        }
    }
}

/// How the wait for the program ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

impl TaskHandler for Shell {
    type Input = ShellInput;
    type Output = ShellOutput;

    async fn handle(&self, ctx: TaskContext, input: ShellInput) -> Result<ShellOutput, TaskError> {
        let timeout = self.check(&input)?;
        if let Some(cwd) = &input.cwd {
            match tokio::fs::metadata(cwd).await {
                Ok(m) if m.is_dir() => {}
                _ => {
                    return Err(TaskError::permanent(format!(
                        "cwd: `{}` is not a directory",
                        cwd.display()
                    )))
                }
            }
        }
        let mut command = self.command(&input);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| spawn_error(&input, e))?;
        let (stop, stopped) = watch::channel(false);
        // From here on, dropping the guard (a return, or the worker dropping this future on
        // a cancel or timeout) stops the whole process group.
        let guard = GroupGuard {
            group: child.id().and_then(|id| Pid::from_raw(id as i32)),
            grace: self.kill_grace,
            stop,
        };
        ctx.progress(
            0.0,
            format!("started `{}` (pid {:?})", input.program, child.id()),
        );
        if let (Some(text), Some(mut pipe)) = (input.stdin, child.stdin.take()) {
            // A program that does not read its input ends the write with a broken pipe.
            tokio::spawn(async move {
                let _ = pipe.write_all(text.as_bytes()).await;
            });
        }
        let cap = self.max_output_bytes;
        let stdout = tokio::spawn(read_capped(child.stdout.take(), cap, stopped.clone()));
        let stderr = tokio::spawn(read_capped(child.stderr.take(), cap, stopped));

        let end = tokio::select! {
            status = child.wait() => End::Exited(status.map_err(wait_error)?),
            _ = tokio::time::sleep(timeout) => End::TimedOut,
            _ = ctx.cancelled() => End::Cancelled,
        };
        // Whatever the program left running goes too.
        guard.signal(Signal::TERM);
        let (status, timed_out) = match end {
            End::Exited(status) => (status, false),
            End::TimedOut => (guard.reap(&mut child).await?, true),
            End::Cancelled => {
                guard.reap(&mut child).await?;
                return Err(TaskError::permanent("cancelled"));
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (stdout, stderr) = guard.collect(stdout, stderr).await;
        Ok(ShellOutput {
            exit_code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout.kept).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.kept).into_owned(),
            stdout_truncated: stdout.truncated,
            stderr_truncated: stderr.truncated,
            duration_ms,
            timed_out,
        })
    }
}

impl Shell {
    /// Checks every bound of `input`; answers its time limit.
    fn check(&self, input: &ShellInput) -> Result<Duration, TaskError> {
        let program_max = if input.shell {
            MAX_SCRIPT_BYTES
        } else {
            MAX_PROGRAM_BYTES
        };
        if input.program.is_empty() {
            return Err(invalid("program", "must not be empty"));
        }
        text("program", &input.program, program_max)?;
        if let Some(allowed) = &self.allowed_programs {
            if input.shell {
                return Err(invalid("shell", "scripts are not allowed by this handler"));
            }
            if !allowed.iter().any(|p| p == &input.program) {
                return Err(invalid(
                    "program",
                    format!("not an allowed program (allowed: {})", allowed.join(", ")),
                ));
            }
        }
        if input.args.len() > MAX_ARGS {
            return Err(invalid(
                "args",
                format!("{} arguments, at most {MAX_ARGS}", input.args.len()),
            ));
        }
        for (i, arg) in input.args.iter().enumerate() {
            text(&format!("args[{i}]"), arg, MAX_ARG_BYTES)?;
        }
        if let Some(cwd) = &input.cwd {
            let cwd = cwd.to_string_lossy();
            text("cwd", &cwd, MAX_CWD_BYTES)?;
        }
        if input.env.len() > MAX_ENV {
            return Err(invalid(
                "env",
                format!("{} variables, at most {MAX_ENV}", input.env.len()),
            ));
        }
        for (name, value) in &input.env {
            let field = format!("env.{name}");
            if !self.env_allowlist.iter().any(|allowed| allowed == name) {
                return Err(invalid(
                    &field,
                    format!(
                        "not an allowed variable (allowed: {})",
                        self.env_allowlist.join(", ")
                    ),
                ));
            }
            text(&field, value, MAX_ENV_VALUE_BYTES)?;
        }
        if let Some(stdin) = &input.stdin {
            if stdin.len() > MAX_STDIN_BYTES {
                return Err(invalid(
                    "stdin",
                    format!("{} bytes, at most {MAX_STDIN_BYTES}", stdin.len()),
                ));
            }
        }
        match input.timeout_ms {
            None => Ok(self.default_timeout),
            Some(ms) => {
                let timeout = Duration::from_millis(ms);
                if ms == 0 || timeout > self.max_timeout {
                    Err(invalid(
                        "timeout_ms",
                        format!("{ms}, expected 1 to {}", self.max_timeout.as_millis()),
                    ))
                } else {
                    Ok(timeout)
                }
            }
        }
    }

    /// The command for `input`: no shell unless asked, a cleared environment but for the
    /// allowlist, piped output, a process group of its own.
    fn command(&self, input: &ShellInput) -> Command {
        let mut command = if input.shell {
            let mut c = Command::new("sh");
            // `sh` is `$0`, so `args` are `$1`, `$2`, ...
            c.arg("-c").arg(&input.program).arg("sh");
            c
        } else {
            Command::new(&input.program)
        };
        command.args(&input.args).env_clear();
        for name in &self.env_allowlist {
            match input.env.get(name) {
                Some(value) => {
                    command.env(name, value);
                }
                None => {
                    if let Some(value) = std::env::var_os(name) {
                        command.env(name, value);
                    }
                }
            }
        }
        if let Some(cwd) = &input.cwd {
            command.current_dir(cwd);
        }
        command
            .stdin(if input.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The guard stops the group; a kill of the leader alone would leave the rest.
            .kill_on_drop(false);
        command
    }
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> TaskError {
    TaskError::permanent(format!("{field}: {reason}"))
}

/// Checks a string's length and that it holds no NUL byte.
fn text(field: &str, value: &str, max: usize) -> Result<(), TaskError> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes, at most {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

fn spawn_error(input: &ShellInput, e: std::io::Error) -> TaskError {
    let program = if input.shell { "sh" } else { &input.program };
    match e.kind() {
        std::io::ErrorKind::NotFound => invalid("program", format!("`{program}` not found")),
        std::io::ErrorKind::PermissionDenied => {
            invalid("program", format!("`{program}` is not executable"))
        }
        // Out of processes, memory or file descriptors: may pass.
        _ => TaskError::retryable(format!("program: `{program}` could not start: {e}")),
    }
}

fn wait_error(e: std::io::Error) -> TaskError {
    TaskError::retryable(format!("waiting for the program failed: {e}"))
}

/// What was read from one pipe.
#[derive(Debug, Default)]
struct Capped {
    /// The first bytes, up to the cap.
    kept: Vec<u8>,
    /// True when more came than the cap.
    truncated: bool,
}

/// Reads `pipe` to its end, keeping the first `cap` bytes and discarding the rest (so the
/// program never blocks on a full pipe), until `stop` changes or its sender is dropped.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) -> Capped {
    let mut out = Capped::default();
    let Some(mut pipe) = pipe else {
        return out;
    };
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let n = tokio::select! {
            read = pipe.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.changed() => break,
        };
        let take = n.min(cap - out.kept.len());
        out.kept.extend_from_slice(&chunk[..take]);
        out.truncated |= take < n;
    }
    out
}

/// Owns the program's process group: dropping it sends the group SIGTERM and, after the
/// grace period if anything is left, SIGKILL; it also stops the pipe readers.
struct GroupGuard {
    /// The group's id (the leader's pid); `None` if the program ended before its id was read.
    group: Option<Pid>,
    /// Between SIGTERM and SIGKILL.
    grace: Duration,
    /// Stops the readers of the pipes when sent to, or dropped with the guard.
    stop: watch::Sender<bool>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(group) = self.group {
            // ESRCH: the group is already gone.
            let _ = rustix::process::kill_process_group(group, signal);
        }
    }

    /// Waits for the leader after a SIGTERM, sending SIGKILL after the grace period.
    async fn reap(&self, child: &mut Child) -> Result<ExitStatus, TaskError> {
        match tokio::time::timeout(self.grace, child.wait()).await {
            Ok(status) => status.map_err(wait_error),
            Err(_) => {
                self.signal(Signal::KILL);
                let _ = child.start_kill();
                child.wait().await.map_err(wait_error)
            }
        }
    }

    /// Reads what is left in the pipes once the leader is gone and the group was sent
    /// SIGTERM: a grace period for the rest of the group to close them, then SIGKILL and
    /// another, then the readers stop with what they have (a process that left the group
    /// may hold a pipe open for ever).
    async fn collect(
        &self,
        stdout: JoinHandle<Capped>,
        stderr: JoinHandle<Capped>,
    ) -> (Capped, Capped) {
        let both = async move {
            let (out, err) = tokio::join!(stdout, stderr);
            (out.unwrap_or_default(), err.unwrap_or_default())
        };
        tokio::pin!(both);
        if let Ok(done) = tokio::time::timeout(self.grace, &mut both).await {
            return done;
        }
        self.signal(Signal::KILL);
        if let Ok(done) = tokio::time::timeout(self.grace, &mut both).await {
            return done;
        }
        let _ = self.stop.send(true);
        both.await
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(group) = self.group else { return };
        self.signal(Signal::TERM);
        if rustix::process::test_kill_process_group(group).is_err() {
            return;
        }
        let grace = self.grace;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _ = rustix::process::kill_process_group(group, Signal::KILL);
                });
            }
            Err(_) => {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
        }
    }
}
