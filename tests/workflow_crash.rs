//! The workflow crash test, on both backends: the `workflow_durable` example (one run of 50
//! sequential steps, each execution journaled as `STEP PID`) is killed with SIGKILL three
//! times at different points (once while a step surely runs) and started again each time.
//! The run must complete; every step must have run, and a step may have run twice only if
//! it was the one in flight when a process was killed. With overlapped checkpoints (the
//! next step starts while the last outcome commits) a kill may run the last few steps of
//! the killed process again, and only those. The test prints those counts.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/databases.rs"]
mod databases;
#[path = "support/programs.rs"]
mod programs;
use programs::{example_binary, Program};

const STEPS: usize = 50;

#[test]
fn sqlite_kill_9_resumes_runs_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let url = databases::sqlite_url(dir.path(), "wf");
    crash_and_resume("sqlite", &url, dir.path(), "before_next");
}

#[test]
fn sqlite_kill_9_resumes_overlapped_runs() {
    let dir = tempfile::tempdir().unwrap();
    let url = databases::sqlite_url(dir.path(), "wf");
    crash_and_resume("sqlite", &url, dir.path(), "overlapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_resumes_runs_from_the_journal() {
    postgres("before_next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_resumes_overlapped_runs() {
    postgres("overlapped").await;
}

async fn postgres(mode: &'static str) {
    let Some(url) = databases::fresh_postgres("wfcrash").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (u, d) = (url.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || crash_and_resume("postgres", &u, &d, mode))
        .await
        .unwrap();
    databases::drop_postgres(&url).await;
}

fn program(url: &str, journal: &Path, mode: &str) -> Command {
    let mut c = Command::new(example_binary("workflow_durable"));
    c.args([
        "--database-url",
        url,
        "--steps",
        &STEPS.to_string(),
        "--work-ms",
        "5",
        "--checkpoint",
        mode,
        "--journal",
    ])
    .arg(journal)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    c
}

/// The journal's complete lines: (step, pid), in order. A line being written as the file
/// is read (its end not yet there) is left for the next read.
fn lines(path: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let (step, pid) = l.split_once(' ').expect("a journal line is `STEP PID`");
            (step.to_string(), pid.parse().unwrap())
        })
        .collect()
}

/// Waits until `until(lines)` holds, then kills the program; returns the steps it ran, in
/// order (the last of them in flight at the kill).
fn kill_when(
    mut p: Program,
    journal: &Path,
    until: impl Fn(&[(String, u32)]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = lines(journal);
        if until(&seen) {
            p.0.kill().unwrap(); // SIGKILL
            p.0.wait().unwrap();
            let pid = p.0.id();
            return lines(journal)
                .into_iter()
                .filter(|(_, by)| *by == pid)
                .map(|(s, _)| s)
                .collect();
        }
        assert!(
            p.0.try_wait().unwrap().is_none(),
            "the program ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "only {} steps ran in 120 s",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn crash_and_resume(backend: &str, url: &str, dir: &Path, mode: &str) {
    let journal = dir.join("steps.log");
    let mut killed = Vec::new();
    // At full speed, wherever the engine is.
    let p = Program(program(url, &journal, mode).spawn().unwrap());
    killed.push(kill_when(p, &journal, |l| l.len() >= 7));
    // While a step surely runs: the 6th execution of this process hangs.
    let mut c = program(url, &journal, mode);
    c.args(["--hang-after", "5"]);
    let p = Program(c.spawn().unwrap());
    let pid = p.0.id();
    killed.push(kill_when(p, &journal, move |l| {
        l.iter().filter(|(_, by)| *by == pid).count() >= 6
    }));
    // At full speed again, later in the run.
    let p = Program(program(url, &journal, mode).spawn().unwrap());
    killed.push(kill_when(p, &journal, |l| l.len() >= 35));
    // The last start runs to the end.
    let out = program(url, &journal, mode).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the last run failed: {stdout}");
    assert!(stdout.contains("completed after 50 steps"), "{stdout}");

    let all = lines(&journal);
    let mut runs: HashMap<String, usize> = HashMap::new();
    for (step, _) in &all {
        *runs.entry(step.clone()).or_default() += 1;
    }
    assert_eq!(runs.len(), STEPS, "every step ran: {runs:?}");
    // What each killed program ran that a later one ran again: a kill loses at most what
    // came after the killed program's last commit, so those steps are the last ones it
    // ran; with the default checkpoints, only the step in flight.
    let mut again = Vec::new();
    let mut before = 0;
    for ran in &killed {
        before += ran.len();
        let later: Vec<&String> = all[before..].iter().map(|(s, _)| s).collect();
        let repeated: Vec<bool> = ran.iter().map(|s| later.contains(&s)).collect();
        let tail = repeated.iter().rev().take_while(|r| **r).count();
        assert_eq!(
            repeated.iter().filter(|r| **r).count(),
            tail,
            "a step ran again after a kill though steps the killed program ran after it did not: {ran:?} ({repeated:?}); journal: {all:?}"
        );
        if mode == "before_next" {
            assert!(
                tail <= 1,
                "{tail} steps ran again after one kill: {ran:?}; journal: {all:?}"
            );
        }
        again.push(ran[ran.len() - tail..].to_vec());
    }
    // Each step ran once, plus once for each kill that lost it.
    for (step, n) in &runs {
        let lost = again.iter().filter(|a| a.contains(step)).count();
        assert_eq!(
            *n,
            1 + lost,
            "{step} ran {n} times, lost at {lost} kills; journal: {all:?}"
        );
    }
    let twice = runs.values().filter(|n| **n > 1).count();
    println!(
        "{backend}, checkpoint = {mode}: 3 kills, {STEPS} steps, each completed step ran once; ran again: {twice}, by kill: {again:?}; in flight at the kills: {:?}",
        killed.iter().map(|r| r.last().cloned().unwrap_or_default()).collect::<Vec<_>>()
    );
}
