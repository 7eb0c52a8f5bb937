//! Workflows whose steps run on node processes, on SQLite and on PostgreSQL: a coordinator in
//! this process with a cluster listener, and `node` example programs joined to it over
//! loopback TCP. Steps run `journal` tasks, which only the nodes serve, so they surely run
//! there; each execution is a line in the node's journal file (`TASK_ID ATTEMPT NODE TAG`),
//! and files steer them (`hold_file`, `fail_unless_file`; see `examples/node/journal.rs`).
//!
//! Pause, cancel and retry while a step runs on a node; a map whose node is killed (SIGKILL)
//! mid-way completes on the other node.
//!
//! The scenarios take turns: ractor's process groups are per process, and a node picks
//! the gate it sees through its session, so two coordinators in this process at once would
//! show each other's gates to their nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wrangle::workflow::{Input, RunId, RunSnapshot, RunStatus, Step, TaskStep, Workflow};
use wrangle::{
    ClusterConfig, Coordinator, CoordinatorConfig, NodeStatus, StoreConfig, TaskOptions, TaskStatus,
};

#[macro_use]
#[path = "support/databases.rs"]
mod databases;
#[path = "support/common.rs"]
mod common;
#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;
#[path = "support/cluster.rs"]
#[allow(dead_code)] // the coordinator program's helpers are not used here
mod rig;

use common::eventually;
use rig::{spawn_node, Node, COOKIE};

const WAIT: Duration = Duration::from_secs(60);

/// One scenario at a time (see the module's doc).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The coordinator of a scenario, and where its nodes keep their files.
struct Cluster {
    c: Coordinator,
    cluster_port: u16,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A node program joined to this coordinator, once it is online.
    async fn node(&self, name: &str) -> Node {
        let node = spawn_node(self.dir.path(), self.cluster_port, name, "", COOKIE, &[]);
        eventually(&format!("{name} online"), WAIT, || async {
            self.c.nodes().await.is_ok_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.name == name && n.status == NodeStatus::Online)
            })
        })
        .await;
        node
    }

    /// A file in the scenario's directory (not created).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn status(&self, run: RunId) -> RunSnapshot {
        self.c.workflows().status(run).await.unwrap()
    }

    /// Runs one `journal` task outside any workflow and waits for it: once it ran on a
    /// node, anything the engine had handed to the queue before it was leased as well.
    async fn probe(&self, tag: &str) {
        let out = tokio::time::timeout(WAIT, self.c.submit("journal", &json!({ "tag": tag })))
            .await
            .expect("the probe task ran in time")
            .unwrap();
        let out: Value = out.decode().unwrap();
        assert_eq!(out["tag"], tag);
    }
}

/// Starts a coordinator on the store at `url`, listening for nodes, and runs `body` with
/// it; the coordinator is stopped afterwards even when `body` panics, so the next
/// scenario starts alone.
async fn with_cluster<F, Fut>(url: String, body: F)
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _turn = TURN.lock().await;
    let cluster_port = net::free_port();
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 1,
        auto_scale: false,
        store: Some(StoreConfig::new(&url)),
        cluster: Some(ClusterConfig::new(
            format!("127.0.0.1:{cluster_port}").parse().unwrap(),
            COOKIE,
        )),
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::builder().config(config).start().await.unwrap();
    assert!(!c.serves("journal"), "only the nodes serve `journal`");
    let cluster = Arc::new(Cluster {
        c,
        cluster_port,
        dir: tempfile::tempdir().unwrap(),
    });
    let outcome = tokio::spawn(body(cluster.clone())).await;
    cluster.c.stop(false).await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// One execution in a node's journal.
#[derive(Clone, Debug)]
struct Ran {
    task: String,
    node: String,
    tag: String,
}

/// The executions in `nodes`' journals, in order per journal, and the ids of the tasks
/// whose runs saw their cancellation.
fn journals(nodes: &[&Node]) -> (Vec<Ran>, BTreeSet<String>) {
    let (mut ran, mut cancelled) = (Vec::new(), BTreeSet::new());
    for node in nodes {
        let text = std::fs::read_to_string(&node.journal).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("cancelled ") {
                cancelled.insert(id.to_string());
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let [task, _attempt, node, tag] = parts[..] else {
                panic!("journal line `{line}` is not `ID ATTEMPT NODE TAG`");
            };
            ran.push(Ran {
                task: task.into(),
                node: node.into(),
                tag: tag.into(),
            });
        }
    }
    (ran, cancelled)
}

/// The tags run on `nodes`, in order.
fn tags(nodes: &[&Node]) -> Vec<String> {
    journals(nodes).0.into_iter().map(|r| r.tag).collect()
}

/// A `journal` step tagged with its name, with extra payload fields.
fn step(name: &str, extra: Value) -> TaskStep {
    let mut input = json!({ "tag": name });
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    Step::task(name, "journal")
        .input(Input::Value(input))
        .output_key(name)
}

fn file(path: &Path) -> Value {
    json!(path.to_str().unwrap())
}

async fn pause_and_resume_while_a_step_runs_on_a_node(url: String) {
    with_cluster(url, |k| async move {
        let node = k.node("pause-1").await;
        let release = k.path("release-s1");
        let flows = k.c.workflows();
        flows
            .register(
                Workflow::new("held")
                    .step(step("s1", json!({ "hold_file": file(&release) })))
                    .step(step("s2", json!({})))
                    .step(step("s3", json!({}))),
            )
            .await
            .unwrap();
        let run = flows.start("held", json!({})).await.unwrap();
        eventually("s1 to run on the node", WAIT, || async {
            tags(&[&node]) == ["s1"]
        })
        .await;
        let paused = flows.pause(run).await.unwrap();
        assert_eq!(paused.status, RunStatus::Paused);
        assert_eq!(paused.steps_running.len(), 1, "{paused:?}");

        // s1 finishes while the run is paused; nothing starts after it.
        std::fs::File::create(&release).unwrap();
        eventually("s1 to complete", WAIT, || async {
            k.status(run).await.steps_completed == 1
        })
        .await;
        let s = k.status(run).await;
        assert_eq!(s.status, RunStatus::Paused);
        assert!(s.steps_running.is_empty(), "{s:?}");
        assert_eq!(s.state["s1"]["node"], "pause-1");
        k.probe("probe").await;
        assert_eq!(tags(&[&node]), ["s1", "probe"], "s2 started while paused");
        let s = k.status(run).await;
        assert_eq!((s.status, s.steps_completed), (RunStatus::Paused, 1));
        assert!(s.steps_running.is_empty(), "{s:?}");

        assert_eq!(flows.resume(run).await.unwrap().status, RunStatus::Running);
        let done = flows.wait(run, WAIT).await.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
        assert_eq!(done.steps_completed, 3);
        assert_eq!(tags(&[&node]), ["s1", "probe", "s2", "s3"]);
        for r in journals(&[&node]).0 {
            assert_eq!(r.node, "pause-1");
        }
    })
    .await;
}

async fn cancel_while_a_step_runs_on_a_node(url: String) {
    with_cluster(url, |k| async move {
        let node = k.node("cancel-1").await;
        let flows = k.c.workflows();
        flows
            .register(
                Workflow::new("doomed")
                    .step(step("s1", json!({ "hold_file": file(&k.path("never")) })))
                    .step(step("s2", json!({}))),
            )
            .await
            .unwrap();
        let run = flows.start("doomed", json!({})).await.unwrap();
        eventually("s1 to run on the node", WAIT, || async {
            tags(&[&node]) == ["s1"]
        })
        .await;
        let task = journals(&[&node]).0[0].task.clone();

        let cancelled = flows.cancel(run).await.unwrap();
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        let s = flows.wait(run, WAIT).await.unwrap();
        assert_eq!(s.status, RunStatus::Cancelled);
        assert!(s.finished_at_ms.is_some(), "{s:?}");
        // The step's task was cancelled, on the node too: its handler saw it.
        let id = task.parse().unwrap();
        eventually("the step's task to be cancelled", WAIT, || async {
            k.c.get_task(id).await.unwrap().status == TaskStatus::Cancelled
        })
        .await;
        eventually(
            "the node's handler to see the cancellation",
            WAIT,
            || async { journals(&[&node]).1.contains(&task) },
        )
        .await;
        // Nothing after it started.
        k.probe("probe").await;
        assert_eq!(tags(&[&node]), ["s1", "probe"]);
        assert!(flows.retry(run).await.is_err(), "a cancelled run is final");
    })
    .await;
}

async fn retry_a_step_that_failed_on_a_node(url: String) {
    with_cluster(url, |k| async move {
        let node = k.node("retry-1").await;
        let fixed = k.path("fixed");
        let flows = k.c.workflows();
        flows
            .register(
                Workflow::new("fixable")
                    .step(step("a", json!({})))
                    .step(step("b", json!({ "fail_unless_file": file(&fixed) })))
                    .step(step("c", json!({}))),
            )
            .await
            .unwrap();
        let run = flows.start("fixable", json!({})).await.unwrap();
        let failed = flows.wait(run, WAIT).await.unwrap();
        assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
        let error = failed.error.as_deref().unwrap_or_default();
        assert!(error.contains("step b"), "{error}");
        assert_eq!(failed.steps_completed, 1);
        // A permanent failure: b ran once, not its task's retries' worth.
        assert_eq!(tags(&[&node]), ["a", "b"]);

        std::fs::File::create(&fixed).unwrap();
        let retried = flows.retry(run).await.unwrap();
        assert_eq!(retried.retries, 1);
        let done = flows.wait(run, WAIT).await.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
        assert_eq!(done.steps_completed, 3);
        assert_eq!(tags(&[&node]), ["a", "b", "b", "c"], "a did not run again");
        for key in ["a", "b", "c"] {
            assert_eq!(done.state[key]["node"], "retry-1", "{key}: {done:?}");
        }
        let (ran, _) = journals(&[&node]);
        assert_ne!(ran[1].task, ran[2].task, "the retry is a new task");
    })
    .await;
}

const ITEMS: usize = 40;
const CONCURRENCY: u32 = 8;
/// Slots of a node program started by `spawn_node`: 2 workers x 4.
const NODE_SLOTS: usize = 8;

async fn a_map_completes_on_another_node_when_its_node_is_killed(url: String) {
    with_cluster(url, |k| async move {
        let names = ["map-1", "map-2"];
        let mut nodes = [k.node(names[0]).await, k.node(names[1]).await];
        let flows = k.c.workflows();
        flows
            .register(
                Workflow::new("spread").step(
                    Step::map("each", "items", "journal")
                        .concurrency(CONCURRENCY)
                        .output_key("out")
                        .options(TaskOptions {
                            retries: Some(5),
                            ..TaskOptions::default()
                        }),
                ),
            )
            .await
            .unwrap();
        let items: Vec<Value> = (0..ITEMS).map(|i| json!({"tag": i, "ms": 300})).collect();
        let run = flows
            .start("spread", json!({ "items": items }))
            .await
            .unwrap();
        let both = || journals(&[&nodes[0], &nodes[1]]).0;
        eventually("a quarter of the items to start", WAIT, || async {
            both().len() >= ITEMS / 4
        })
        .await;
        // The node that has started more items so far goes.
        let started = |n: &Node| journals(&[n]).0.len();
        let victim = usize::from(started(&nodes[1]) > started(&nodes[0]));
        nodes[victim].kill();
        let killed_at = Instant::now();
        let (killed, survivor) = (&nodes[victim], &nodes[1 - victim]);
        let on_killed: BTreeSet<String> =
            journals(&[killed]).0.into_iter().map(|r| r.tag).collect();

        let done = flows.wait(run, WAIT).await.unwrap();
        let took = killed_at.elapsed();
        eventually("the killed node to be listed as lost", WAIT, || async {
            k.c.nodes()
                .await
                .unwrap()
                .iter()
                .any(|n| n.name == names[victim] && n.status == NodeStatus::Lost)
        })
        .await;
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
        let out = done.state["out"].as_array().expect("a list of outputs");
        assert_eq!(out.len(), ITEMS);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o["tag"], i.to_string(), "item {i}'s output: {o}");
        }

        let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in journals(&[killed, survivor]).0 {
            runs.entry(r.tag).or_default().push(r.node);
        }
        assert_eq!(runs.len(), ITEMS, "every item ran: {runs:?}");
        let mut twice = 0;
        for (tag, on) in &runs {
            if on.len() > 1 {
                twice += 1;
                // Only an item in flight on the killed node runs again, once, elsewhere.
                assert!(on_killed.contains(tag), "{tag} ran twice: {on:?}");
                assert_eq!(on.len(), 2, "{tag}: {on:?}");
                assert_eq!(on[1], names[1 - victim], "{tag}: {on:?}");
            }
        }
        assert!(
            twice <= NODE_SLOTS.min(CONCURRENCY as usize),
            "{twice} items ran twice; at most {CONCURRENCY} were in flight"
        );
        println!(
            "map of {ITEMS} items at concurrency {CONCURRENCY} on two nodes: {} started on the \
             killed node, {twice} were in flight there and ran twice; the run completed {took:?} \
             after the kill",
            on_killed.len()
        );
    })
    .await;
}

on_both!(
    pause_and_resume_while_a_step_runs_on_a_node,
    cancel_while_a_step_runs_on_a_node,
    retry_a_step_that_failed_on_a_node,
    a_map_completes_on_another_node_when_its_node_is_killed,
);
