//! Nodes as child processes of the coordinator: the node program started on this machine.
//!
//! Each node runs in its own process group, with the node's settings in its environment
//! (the cookie never on its command line), standard input closed, and its output appended
//! to `LOG_DIR/NODE.log` when a log directory is given (else discarded). Terminating sends
//! SIGTERM to the process group (the node program drains: running tasks finish, then it
//! leaves) and SIGKILL once the grace period has passed. Only processes this launcher
//! started are listed or stopped, and a child whose handle is dropped is killed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::process::{Child, Command};

use super::{LaunchError, Launcher, NodeLaunch, Resource};

const KIND: &str = "process";

/// Starts nodes as local child processes.
#[derive(Debug)]
pub struct ProcessLauncher {
    program: PathBuf,
    args: Vec<String>,
    log_dir: Option<PathBuf>,
    /// Running children by pid.
    children: Mutex<HashMap<String, Spawned>>,
}

#[derive(Debug)]
struct Spawned {
    child: Child,
    node: String,
    group: String,
}

impl ProcessLauncher {
    /// Starts `program` (the node program) with `args` for each node.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            program: program.into(),
            args,
            log_dir: None,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// Appends each node's output to `DIR/NODE.log`.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    fn output(&self, node: &str) -> Result<(Stdio, Stdio), LaunchError> {
        let Some(dir) = &self.log_dir else {
            return Ok((Stdio::null(), Stdio::null()));
        };
        let path = dir.join(format!("{node}.log"));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| LaunchError::new(KIND, format!("cannot open {}: {e}", path.display())))
        };
        Ok((open()?.into(), open()?.into()))
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Spawned>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Launcher for ProcessLauncher {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn launch(&self, node: NodeLaunch) -> BoxFuture<'_, Result<String, LaunchError>> {
        Box::pin(async move {
            let (stdout, stderr) = self.output(&node.name)?;
            let child = Command::new(&self.program)
                .args(&self.args)
                .envs(&node.env)
                .env("WRANGLE_GROUP", &node.group)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    LaunchError::new(
                        KIND,
                        format!("cannot start {}: {e}", self.program.display()),
                    )
                })?;
            let pid = child
                .id()
                .ok_or_else(|| LaunchError::new(KIND, "the child exited before it had a pid"))?;
            tracing::info!(node = %node.name, pid, program = %self.program.display(), "node process started");
            self.children().insert(
                pid.to_string(),
                Spawned {
                    child,
                    node: node.name,
                    group: node.group,
                },
            );
            Ok(pid.to_string())
        })
    }

    fn terminate(&self, id: String, grace: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            let Some(mut spawned) = self.children().remove(&id) else {
                return Ok(());
            };
            let group = id
                .parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            let signal = |sig| {
                if let Some(pid) = group {
                    // ESRCH: the group is already gone.
                    let _ = rustix::process::kill_process_group(pid, sig);
                }
            };
            signal(rustix::process::Signal::TERM);
            match tokio::time::timeout(grace, spawned.child.wait()).await {
                Ok(status) => {
                    tracing::info!(node = %spawned.node, pid = %id, status = ?status.ok(), "node process stopped");
                }
                Err(_) => {
                    tracing::warn!(node = %spawned.node, pid = %id, grace_ms = grace.as_millis() as u64, "node process still running after its grace period: killed");
                    signal(rustix::process::Signal::KILL);
                    let _ = spawned.child.kill().await;
                }
            }
            Ok(())
        })
    }

    fn list(&self, group: String) -> BoxFuture<'_, Result<Vec<Resource>, LaunchError>> {
        Box::pin(async move {
            let mut children = self.children();
            let mut exited = Vec::new();
            let mut running = Vec::new();
            for (pid, s) in children.iter_mut() {
                match s.child.try_wait() {
                    Ok(None) if s.group == group => running.push(Resource {
                        id: pid.clone(),
                        node: s.node.clone(),
                    }),
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        tracing::warn!(node = %s.node, %pid, %status, "node process exited");
                        exited.push(pid.clone());
                    }
                    Err(e) => {
                        tracing::warn!(node = %s.node, %pid, error = %e, "node process cannot be waited on");
                        exited.push(pid.clone());
                    }
                }
            }
            for pid in exited {
                children.remove(&pid);
            }
            Ok(running)
        })
    }
}
