//! What the node-group tests share: waiting with a deadline, finding node processes, and
//! running a batch of labelled `echo` tasks that only a group's nodes can serve.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use wrangle::{Coordinator, TaskSpec};

/// Whether process `pid` runs (a zombie waiting to be reaped does not).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Pids of the live processes whose environment says they belong to node group `group`.
pub(crate) fn processes_of(group: &str) -> Vec<u32> {
    let tag = format!("WRANGLE_GROUP={group}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == tag.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Waits until `cond` holds, polling every 50 ms; fails the test after `timeout`.
pub(crate) async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `count` `echo` tasks requiring `label`, waits for each answer (up to `timeout`
/// each) and calls `each` after every one.
pub(crate) async fn run_echoes(
    c: &Coordinator,
    count: usize,
    label: &str,
    timeout: Duration,
    mut each: impl FnMut(),
) {
    let mut handles = Vec::new();
    for i in 0..count {
        let spec = TaskSpec::new("echo", &serde_json::json!({ "i": i }))
            .unwrap()
            .label(label);
        handles.push(c.submit_async(spec).await.unwrap());
    }
    for h in handles {
        let out: serde_json::Value = h.result(timeout).await.unwrap();
        assert!(out.get("i").is_some(), "echo answers its input: {out}");
        each();
    }
}
