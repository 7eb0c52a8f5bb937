//! The workflow crash test, on both backends: the `workflow_durable` example (one run of 50
//! sequential steps, each execution journaled as `STEP PID`) is killed with SIGKILL three
//! times at different points (once while a step surely runs) and started again each time.
//! The run must complete; every step must have run, and a step may have run twice only if
//! it was the one in flight when a process was killed. The test prints those counts.

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
    crash_and_resume("sqlite", &url, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_resumes_runs_from_the_journal() {
    let Some(url) = databases::fresh_postgres("wfcrash").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (u, d) = (url.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || crash_and_resume("postgres", &u, &d))
        .await
        .unwrap();
    databases::drop_postgres(&url).await;
}

fn program(url: &str, journal: &Path) -> Command {
    let mut c = Command::new(example_binary("workflow_durable"));
    c.args([
        "--database-url",
        url,
        "--steps",
        &STEPS.to_string(),
        "--work-ms",
        "5",
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

/// Waits until `until(lines)` holds, then kills the program; returns the step it was
/// running last (the one a kill may make run twice).
fn kill_when(mut p: Program, journal: &Path, until: impl Fn(&[(String, u32)]) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = lines(journal);
        if until(&seen) {
            p.0.kill().unwrap(); // SIGKILL
            p.0.wait().unwrap();
            let pid = p.0.id();
            let after = lines(journal);
            return after
                .iter()
                .rev()
                .find(|(_, by)| *by == pid)
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
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

fn crash_and_resume(backend: &str, url: &str, dir: &Path) {
    let journal = dir.join("steps.log");
    let mut in_flight = Vec::new();
    // At full speed, wherever the engine is.
    let p = Program(program(url, &journal).spawn().unwrap());
    in_flight.push(kill_when(p, &journal, |l| l.len() >= 7));
    // While a step surely runs: the 6th execution of this process hangs.
    let mut c = program(url, &journal);
    c.args(["--hang-after", "5"]);
    let p = Program(c.spawn().unwrap());
    let pid = p.0.id();
    in_flight.push(kill_when(p, &journal, move |l| {
        l.iter().filter(|(_, by)| *by == pid).count() >= 6
    }));
    // At full speed again, later in the run.
    let p = Program(program(url, &journal).spawn().unwrap());
    in_flight.push(kill_when(p, &journal, |l| l.len() >= 35));
    // The last start runs to the end.
    let out = program(url, &journal).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the last run failed: {stdout}");
    assert!(stdout.contains("completed after 50 steps"), "{stdout}");

    let mut runs: HashMap<String, usize> = HashMap::new();
    for (step, _) in lines(&journal) {
        *runs.entry(step).or_default() += 1;
    }
    assert_eq!(runs.len(), STEPS, "every step ran: {runs:?}");
    let twice: Vec<&String> = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| s)
        .collect();
    for step in &twice {
        assert!(
            in_flight.contains(step) && runs[*step] <= 1 + in_flight.iter().filter(|s| s == step).count(),
            "{step} ran {} times but was in flight at no kill (in flight: {in_flight:?}); journal: {:?}",
            runs[*step],
            lines(&journal)
        );
    }
    println!(
        "{backend}: 3 kills, {STEPS} steps, each completed step ran once; ran twice: {} ({twice:?}), in flight at the kills: {in_flight:?}",
        twice.len()
    );
}
