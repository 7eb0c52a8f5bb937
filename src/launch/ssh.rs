//! Nodes started over SSH: the node program run on hosts of a [`ComputeCluster`], through
//! its SSH nodes (so the cluster's key login, host-key checks, timeouts and bounded output
//! apply; any compute node that runs commands works, an exec Docker node too).
//!
//! Each call is one `sh -s` whose script arrives on standard input, so the node's
//! environment (the cluster cookie among it) is never on a command line. On the host, a
//! group keeps its files under `~/.wrangle/nodes/GROUP/`: `NODE.pid` and `NODE.log`.
//!
//! - **launch**: on the host with the fewest of this launcher's nodes (healthy ones first),
//!   `setsid PROGRAM ARGS` in the background with the node's environment, output to
//!   `NODE.log`, its pid in `NODE.pid`. The resource id is `NODE@HOST`.
//! - **terminate**: SIGTERM to the node's process group (the node program drains), SIGKILL
//!   after the grace period, then the pid file is removed.
//! - **list**: every pid file of the group; a process counts as the node only while its
//!   environment says `WRANGLE_NODE_NAME=NODE` (so a reused pid is never taken for it, nor
//!   signalled). A node that exited has its last lines of output logged here, and its pid
//!   file removed; logs older than a week are deleted.
//!
//! The hosts run Linux (`/proc/PID/environ`) with a POSIX `sh` and `setsid`. Each host's
//! compute node needs a timeout longer than the group's `stop_grace`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{LaunchError, Launcher, NodeLaunch, Resource};
use crate::compute::{CommandRequest, ComputeCluster, ComputeRequest, ComputeResponse};
use crate::util::shell_quote;

const KIND: &str = "ssh";
/// Lines of an exited node's log reported.
const TAIL_LINES: usize = 20;

/// Starts nodes on hosts reached through a compute cluster.
pub struct SshLauncher {
    compute: ComputeCluster,
    hosts: Vec<String>,
    program: String,
    args: Vec<String>,
    /// This launcher's nodes per host, as last listed or launched.
    placed: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for SshLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshLauncher")
            .field("hosts", &self.hosts)
            .field("program", &self.program)
            .field("args", &self.args)
            .finish()
    }
}

impl SshLauncher {
    /// Runs `program` with `args` (a path on the hosts) on the compute nodes `hosts` of
    /// `compute`.
    pub fn new(
        compute: ComputeCluster,
        hosts: Vec<String>,
        program: impl Into<String>,
        args: Vec<String>,
    ) -> Self {
        Self {
            compute,
            hosts,
            program: program.into(),
            args,
            placed: Mutex::new(HashMap::new()),
        }
    }

    fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host for a new node: healthy first, then the fewest nodes.
    fn pick(&self) -> Result<String, LaunchError> {
        let placed = self.placed();
        self.hosts
            .iter()
            .filter_map(|h| self.compute.node(h).map(|n| (h, n.info().health.healthy)))
            .min_by_key(|(h, healthy)| (!healthy, placed.get(*h).copied().unwrap_or(0)))
            .map(|(h, _)| h.clone())
            .ok_or_else(|| {
                LaunchError::new(
                    KIND,
                    format!(
                        "none of the hosts {:?} is a node of compute cluster {}",
                        self.hosts,
                        self.compute.name()
                    ),
                )
            })
    }

    /// Runs `script` with `sh -s` on `host`; answers its standard output, or why it failed.
    async fn run(&self, host: &str, script: String) -> Result<String, LaunchError> {
        let node = self.compute.node(host).ok_or_else(|| {
            LaunchError::new(KIND, format!("host {host} is not in the compute cluster"))
        })?;
        let request = ComputeRequest::Command(CommandRequest {
            argv: vec!["sh".into(), "-s".into()],
            stdin: Some(script),
        });
        match node.execute(request).await {
            Ok(ComputeResponse::Command {
                exit_code: Some(0),
                stdout,
                ..
            }) => Ok(stdout),
            Ok(ComputeResponse::Command {
                exit_code, stderr, ..
            }) => Err(LaunchError::new(
                KIND,
                format!(
                    "on {host}: the script exited with {exit_code:?}: {}",
                    last_line(&stderr)
                ),
            )),
            Ok(other) => Err(LaunchError::new(
                KIND,
                format!("on {host}: unexpected answer {other:?}"),
            )),
            Err(e) => Err(LaunchError::new(KIND, format!("on {host}: {e}"))),
        }
    }
}

/// The group's directory on a host (group names are letters, digits, `-` and `_`).
fn dir(group: &str) -> String {
    format!("dir=\"${{HOME:-/tmp}}/.wrangle/nodes/{group}\"\n")
}

/// Shell lines defining `ours`: true while process `$pid` is node `$node`.
const OURS: &str = "ours() { tr '\\0' '\\n' <\"/proc/$pid/environ\" 2>/dev/null | grep -qx \"WRANGLE_NODE_NAME=$node\"; }\n";

fn launch_script(node: &NodeLaunch, program: &str, args: &[String]) -> String {
    let mut s = String::from("set -e\numask 077\n");
    s += &dir(&node.group);
    s += "mkdir -p \"$dir\"\ncd \"$dir\"\n";
    for (k, v) in node
        .env
        .iter()
        .chain([(&"WRANGLE_GROUP".to_string(), &node.group)])
    {
        if is_name(k) {
            s += &format!("export {k}={}\n", shell_quote(&[v]));
        }
    }
    let argv: Vec<&str> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect();
    let name = &node.name;
    s += &format!(
        "setsid {} >\"$dir/{name}.log\" 2>&1 </dev/null &\necho $! >\"$dir/{name}.pid\"\necho \"started $!\"\n",
        shell_quote(&argv)
    );
    s
}

fn terminate_script(group: &str, node: &str, grace: Duration) -> String {
    let tenths = (grace.as_millis() / 100).max(1);
    let mut s = dir(group);
    s += &format!(
        "node='{node}'\nf=\"$dir/$node.pid\"\n[ -f \"$f\" ] || exit 0\npid=$(cat \"$f\")\n"
    );
    s += OURS;
    s += &format!(
        "if ours; then\n  kill -TERM -\"$pid\" 2>/dev/null || kill -TERM \"$pid\" 2>/dev/null || true\n  \
         n=0\n  while [ $n -lt {tenths} ] && ours; do sleep 0.1; n=$((n+1)); done\n  \
         if ours; then kill -KILL -\"$pid\" 2>/dev/null || true; echo killed; fi\nfi\nrm -f \"$f\"\n"
    );
    s
}

fn list_script(group: &str) -> String {
    let mut s = dir(group);
    s += "[ -d \"$dir\" ] || exit 0\n";
    s += OURS;
    s += &format!(
        "for f in \"$dir\"/*.pid; do\n  [ -e \"$f\" ] || continue\n  \
         node=$(basename \"$f\" .pid)\n  pid=$(cat \"$f\")\n  \
         if ours; then echo \"running $node $pid\"; else\n    \
         echo \"exited $node $pid\"\n    \
         tail -n {TAIL_LINES} \"$dir/$node.log\" 2>/dev/null | sed 's/^/| /'\n    \
         rm -f \"$f\"\n  fi\ndone\n\
         find \"$dir\" -name '*.log' -mtime +7 -exec rm -f {{}} + 2>/dev/null || true\n"
    );
    s
}

/// A shell variable name (the environment's keys are checked when the group is; this
/// keeps the script safe whatever reaches it).
fn is_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn last_line(text: &str) -> &str {
    text.trim_end()
        .lines()
        .last()
        .unwrap_or("(nothing on stderr)")
}

/// A node name as this launcher makes them: no character the shell would read.
fn plain(node: &str) -> bool {
    !node.is_empty()
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Launcher for SshLauncher {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn launch(&self, node: NodeLaunch) -> BoxFuture<'_, Result<String, LaunchError>> {
        Box::pin(async move {
            if !plain(&node.name) || !plain(&node.group) {
                return Err(LaunchError::new(KIND, "node and group names must be plain"));
            }
            if let Some(k) = node.env.keys().find(|k| !is_name(k)) {
                return Err(LaunchError::new(
                    KIND,
                    format!("environment name {k:?} is not a shell variable name"),
                ));
            }
            let host = self.pick()?;
            let out = self
                .run(&host, launch_script(&node, &self.program, &self.args))
                .await?;
            let pid = out
                .lines()
                .find_map(|l| l.strip_prefix("started "))
                .ok_or_else(|| LaunchError::new(KIND, format!("on {host}: no pid reported")))?;
            *self.placed().entry(host.clone()).or_default() += 1;
            tracing::info!(node = %node.name, %host, pid = %pid.trim(), program = %self.program, "node started over SSH");
            Ok(format!("{}@{host}", node.name))
        })
    }

    fn terminate(&self, id: String, grace: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            let Some((node, host)) = id.split_once('@') else {
                return Err(LaunchError::new(KIND, format!("bad resource id {id:?}")));
            };
            let Some((group, _)) = node.rsplit_once('-') else {
                return Err(LaunchError::new(KIND, format!("bad node name {node:?}")));
            };
            if !plain(node) {
                return Err(LaunchError::new(KIND, format!("bad node name {node:?}")));
            }
            let out = self.run(host, terminate_script(group, node, grace)).await?;
            if out.contains("killed") {
                tracing::warn!(%node, %host, grace_ms = grace.as_millis() as u64, "node still running after its grace period: killed");
            }
            if let Some(n) = self.placed().get_mut(host) {
                *n = n.saturating_sub(1);
            }
            Ok(())
        })
    }

    fn list(&self, group: String) -> BoxFuture<'_, Result<Vec<Resource>, LaunchError>> {
        Box::pin(async move {
            if !plain(&group) {
                return Err(LaunchError::new(KIND, "group names must be plain"));
            }
            let mut running = Vec::new();
            for host in &self.hosts {
                let out = self.run(host, list_script(&group)).await?;
                let mut count = 0;
                let mut exited: Option<(String, Vec<&str>)> = None;
                for line in out.lines() {
                    if let Some(log) = line.strip_prefix("| ") {
                        if let Some((_, tail)) = &mut exited {
                            tail.push(log);
                        }
                        continue;
                    }
                    report_exited(host, exited.take());
                    let mut parts = line.split(' ');
                    match (parts.next(), parts.next()) {
                        (Some("running"), Some(node)) if plain(node) => {
                            count += 1;
                            running.push(Resource {
                                id: format!("{node}@{host}"),
                                node: node.to_string(),
                            });
                        }
                        (Some("exited"), Some(node)) => {
                            exited = Some((node.to_string(), Vec::new()));
                        }
                        _ => {}
                    }
                }
                report_exited(host, exited);
                self.placed().insert(host.clone(), count);
            }
            Ok(running)
        })
    }
}

fn report_exited(host: &str, exited: Option<(String, Vec<&str>)>) {
    if let Some((node, tail)) = exited {
        tracing::warn!(%node, %host, output = %tail.join("\n"), "node program exited");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_in_the_script_not_on_a_command_line_and_quoted() {
        let mut env = std::collections::BTreeMap::new();
        env.insert("WRANGLE_COOKIE".to_string(), "it's $(secret)".to_string());
        let node = NodeLaunch {
            name: "gpu-0000abcd".into(),
            group: "gpu".into(),
            env,
            resource_labels: Default::default(),
        };
        let script = launch_script(&node, "/opt/wrangle node", &["--slots".into(), "2".into()]);
        assert!(script.contains(r"export WRANGLE_COOKIE='it'\''s $(secret)'"));
        assert!(
            script.contains("setsid '/opt/wrangle node' '--slots' '2' >\"$dir/gpu-0000abcd.log\"")
        );
        assert!(script.contains("export WRANGLE_GROUP='gpu'"));
        assert!(script.contains(".wrangle/nodes/gpu\""));
    }

    #[test]
    fn names_the_shell_would_read_are_refused() {
        assert!(plain("gpu-0000abcd"));
        assert!(!plain("gpu;rm -rf ~"));
        assert!(!plain(""));
        assert!(is_name("WRANGLE_LABELS"));
        assert!(!is_name("A-B"));
        assert!(!is_name("1A"));
    }
}
