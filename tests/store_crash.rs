//! The crash test, on both backends: the `durable` example (a coordinator on a store whose
//! handler journals every execution) is started as a child process with 10,000 tasks, killed
//! with SIGKILL mid-run (while tasks are surely running: past a third of the tasks, the first
//! run's executions hang), and started again. Every task must end `Completed`, none may be lost,
//! and a task may run twice only if it was in flight at the kill: executed before it, but not
//! yet stored as completed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wrangle::{Store, StoreConfig, TaskStatus};

#[path = "support/databases.rs"]
mod databases;
#[path = "support/programs.rs"]
mod programs;
use programs::{example_binary, Program};

const TASKS: usize = 10_000;

/// When the first run is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// At full speed, once a third of the tasks have run: wherever the writer is, even in
    /// the middle of a commit.
    Busy,
    /// Once the tasks past the first third hang and one of them is stored as running: the
    /// kill is sure to cut off running tasks, whose recovery is then checked.
    WithTasksRunning,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_mid_run_loses_nothing() {
    for kill in [Kill::Busy, Kill::WithTasksRunning] {
        let dir = tempfile::tempdir().unwrap();
        let url = databases::sqlite_url(dir.path(), "crash");
        crash_and_restart("sqlite", &url, dir.path(), kill).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_mid_run_loses_nothing() {
    for kill in [Kill::Busy, Kill::WithTasksRunning] {
        let Some(url) = databases::fresh_postgres("crash").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        crash_and_restart("postgres", &url, dir.path(), kill).await;
        databases::drop_postgres(&url).await;
    }
}

fn durable(url: &str, journal: &Path) -> Command {
    let mut c = Command::new(example_binary("durable"));
    c.args(["--database-url", url, "--tasks", &TASKS.to_string()])
        .args(["--work-ms", "2", "--journal"])
        .arg(journal)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// Executions per key, per process.
fn journal(path: &Path) -> HashMap<String, HashMap<u32, usize>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: HashMap<String, HashMap<u32, usize>> = HashMap::new();
    for line in text.lines() {
        let (key, pid) = line.split_once(' ').expect("a journal line is `KEY PID`");
        *runs
            .entry(key.to_string())
            .or_default()
            .entry(pid.parse().unwrap())
            .or_default() += 1;
    }
    runs
}

async fn crash_and_restart(backend: &str, url: &str, dir: &Path, kill: Kill) {
    let log = dir.join("executions.log");

    let third = TASKS / 3;
    let mut first = durable(url, &log);
    if let Kill::WithTasksRunning = kill {
        first.args(["--hang-after", &third.to_string()]);
    }
    let mut first = Program(first.spawn().unwrap());
    // Opened once the first run has migrated the database and begun running tasks, so the
    // two never migrate it at once.
    let mut store = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ran: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
        let time_to_kill = match kill {
            Kill::Busy => ran.len() >= third,
            Kill::WithTasksRunning if ran.len() > third => {
                let store = match &store {
                    Some(s) => s,
                    None => store.insert(Store::open(StoreConfig::new(url)).await.unwrap()),
                };
                // The tasks past the first third are the ones that hang.
                let mut stored_running = false;
                for id in store.find_keys(&ran[third..]).await.unwrap().values() {
                    let task = store.get_task(*id).await.unwrap().unwrap();
                    stored_running |= task.status == TaskStatus::Running;
                }
                stored_running
            }
            Kill::WithTasksRunning => false,
        };
        if time_to_kill {
            break;
        }
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first run ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "{kill:?}: in 120 s only {} tasks ran",
            ran.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(store) = store {
        store.close().await;
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let first_pid = first.0.id();
    let before = journal(&log);
    assert!(
        before
            .values()
            .all(|by_pid| by_pid.len() == 1 && by_pid.values().all(|&n| n == 1)),
        "a task ran twice before the kill"
    );

    // What the store held at the kill: which tasks that had run were stored as completed.
    let store = Store::open(StoreConfig::new(url)).await.unwrap();
    let keys: Vec<&str> = before.keys().map(String::as_str).collect();
    let ids = store.find_keys(&keys).await.unwrap();
    // A task may start while the transaction that stores its submit is still open (its
    // submit has not returned yet): killed then, it ran without being stored, and the rerun
    // submits and runs it again. It was in flight at the kill like a running one. The
    // example submits one batch of 500 at a time, so at most one batch is uncommitted.
    let mut in_flight: HashSet<String> = before
        .keys()
        .filter(|k| !ids.contains_key(*k))
        .cloned()
        .collect();
    let unstored = in_flight.len();
    assert!(
        unstored <= 500,
        "{unstored} tasks ran but were never stored: more than one submit batch of 500"
    );
    let mut running = Vec::new();
    for (key, id) in &ids {
        let task = store.get_task(*id).await.unwrap().unwrap();
        if task.status != TaskStatus::Completed {
            in_flight.insert(key.clone());
        }
        if task.status == TaskStatus::Running {
            running.push(*id);
        }
    }
    if let Kill::WithTasksRunning = kill {
        assert!(
            !running.is_empty(),
            "no task was stored as running at the kill"
        );
    }
    store.close().await;

    // Second run: resumes, and exits 0 only when every task completed.
    let second = durable(url, &log).output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "second run: {}\n{out}",
        second.status
    );
    assert!(
        out.contains(&format!("all {TASKS} tasks finished")),
        "{out}"
    );
    assert!(out.contains(&format!("{TASKS} completed, 0 not")), "{out}");

    let store = Store::open(StoreConfig::new(url)).await.unwrap();
    // A task stored as running went back to the queue with its attempt kept, closed as lost.
    for id in &running {
        let t = store.get_task(*id).await.unwrap().unwrap();
        assert!(t.attempts.len() >= 2, "{id}: {:?}", t.attempts);
        assert_eq!(t.attempts[0].outcome.as_deref(), Some("lost"), "{id}");
    }
    let counts = store.task_counts().await.unwrap();
    assert_eq!(
        counts,
        HashMap::from([(TaskStatus::Completed, TASKS as u64)]),
        "every task completed, and no others were made"
    );
    store.close().await;

    let after = journal(&log);
    let missing: Vec<usize> = (0..TASKS)
        .filter(|i| !after.contains_key(&format!("job-{i}")))
        .collect();
    assert!(missing.is_empty(), "never ran: {missing:?}");
    let twice: Vec<&String> = after
        .iter()
        .filter(|(_, by_pid)| by_pid.values().sum::<usize>() > 1)
        .map(|(key, _)| key)
        .collect();
    for key in &twice {
        let by_pid = &after[*key];
        assert!(
            in_flight.contains(*key),
            "{key} ran again after the restart though it was stored as completed: {by_pid:?}"
        );
        assert_eq!(
            by_pid.get(&first_pid),
            Some(&1),
            "{key} ran more than once in the first run"
        );
        assert_eq!(by_pid.values().sum::<usize>(), 2, "{key}: {by_pid:?}");
    }
    println!(
        "{backend} crash test, killed {kill:?}: {} of {TASKS} tasks ran before the kill, {} were in flight at \
         it (ran, not yet stored as completed; {} of them stored as running, {unstored} whose \
         submit was not yet committed), {} ran twice",
        before.len(),
        in_flight.len(),
        running.len(),
        twice.len()
    );
}
