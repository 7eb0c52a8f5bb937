//! Node processes for the cluster reports: the `node` example started as a child process,
//! killed when dropped, and a wait until a coordinator sees them online.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wrangle::{Coordinator, NodeStatus};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A node process, killed when dropped.
pub(crate) struct NodeProcess(pub(crate) Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `node` example (built beside this program) joining `127.0.0.1:port` as
/// `name`, with `args` after the join, name and cookie.
pub(crate) fn start_node(port: u16, cookie: &str, name: &str, args: &[&str]) -> Res<NodeProcess> {
    let exe = std::env::current_exe()?;
    let node = exe.with_file_name("node");
    if !node.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --example node",
            node.display()
        )
        .into());
    }
    let child = Command::new(node)
        .args(["--join", &format!("127.0.0.1:{port}"), "--name", name])
        .args(args)
        .env("WRANGLE_COOKIE", cookie)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok(NodeProcess(child))
}

/// Waits until every node in `names` is online with its pool running, and at least
/// `workers` workers (local ones included) are attached to the queue.
pub(crate) async fn wait_online(
    coordinator: &Coordinator,
    names: &[String],
    workers: usize,
    patience: Duration,
) -> Res<()> {
    let deadline = Instant::now() + patience;
    loop {
        let nodes = coordinator.nodes().await?;
        let online = names.iter().all(|n| {
            nodes
                .iter()
                .any(|x| x.name == *n && x.status == NodeStatus::Online && x.pool.worker_count > 0)
        });
        let attached = coordinator.queue().stats().await?.workers;
        if online && attached >= workers {
            return Ok(());
        }
        if Instant::now() > deadline {
            let up = nodes
                .iter()
                .filter(|x| x.status == NodeStatus::Online)
                .count();
            return Err(format!(
                "{} nodes did not join within {patience:?} ({up} online, {attached} workers attached)",
                names.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
