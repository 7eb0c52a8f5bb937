//! The `shell` handler end to end through a real coordinator and real processes: a timeout
//! and a cancellation stop the whole process group (grandchildren included), output is
//! capped while the pipes are drained, arguments are never interpolated, the environment
//! is cleared but for the allowlist, and bad input is refused naming the field.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wrangle::{Coordinator, TaskSpec};
use wrangle_actors::{Shell, ShellOutput};

const MIB: usize = 1024 * 1024;

async fn coordinator(shell: Shell) -> Coordinator {
    Coordinator::builder()
        .handler("shell", shell)
        .start()
        .await
        .expect("coordinator starts")
}

async fn run(c: &Coordinator, input: Value) -> Result<ShellOutput, wrangle::Error> {
    c.submit_async(TaskSpec::new("shell", &input)?)
        .await?
        .result(Duration::from_secs(60))
        .await
}

/// The error message of a task that must fail.
async fn refused(c: &Coordinator, input: Value) -> String {
    match run(c, input.clone()).await {
        Ok(out) => panic!("{input} should be refused, ran: {out:?}"),
        Err(e) => e.to_string(),
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)`, and comm may hold spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x'))
}

/// Polls `cond` until it holds, failing the test after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrangle-shell-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let c = coordinator(Shell::default()).await;
    let started = Instant::now();
    let out = run(
        &c,
        json!({ "program": "sleep 30 & echo $!; wait", "shell": true, "timeout_ms": 500 }),
    )
    .await
    .expect("a timeout is an answer");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None, "{out:?}");
    assert_eq!(out.signal, Some(15), "stopped by SIGTERM: {out:?}");
    assert!(out.duration_ms >= 500, "{out:?}");
    // The partial output comes back: the grandchild's pid.
    let pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("the pid the script printed");
    eventually("the grandchild to be gone", Duration::from_secs(10), || {
        !alive(pid)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the grandchild's `sleep 30` did not hold the task"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_kills_the_whole_process_group() {
    let c = coordinator(Shell::default()).await;
    let dir = scratch("cancel");
    let (leader, grandchild) = (dir.join("leader"), dir.join("grandchild"));
    let script = format!(
        "echo $$ > '{}'; sleep 30 & echo $! > '{}'; wait",
        leader.display(),
        grandchild.display()
    );
    let handle = c
        .submit_async(TaskSpec::new("shell", &json!({ "program": script, "shell": true })).unwrap())
        .await
        .unwrap();
    eventually(
        "the script to write both pids",
        Duration::from_secs(20),
        || read_pid(&leader).is_some() && read_pid(&grandchild).is_some(),
    )
    .await;
    let (leader, grandchild) = (read_pid(&leader).unwrap(), read_pid(&grandchild).unwrap());
    assert!(
        alive(leader) && alive(grandchild),
        "both run before the cancel"
    );

    c.cancel_task(handle.id).await.unwrap();
    eventually(
        "the leader and the grandchild to be gone",
        Duration::from_secs(10),
        || !alive(leader) && !alive(grandchild),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_is_drained_and_flagged() {
    let c = coordinator(Shell::default()).await;
    let out = run(
        &c,
        json!({
            "program": "head -c 5242880 /dev/zero; head -c 3145728 /dev/zero >&2; echo done >&2",
            "shell": true,
            "timeout_ms": 30000,
        }),
    )
    .await
    .unwrap();
    // Finished on its own: the 5 MiB went through a pipe that holds 64 KiB.
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout.len(), MIB);
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr.len(), MIB);
    assert!(out.stderr_truncated);

    // Under the cap nothing is flagged; the cap is the handler's to set.
    let c = coordinator(Shell {
        max_output_bytes: 4,
        ..Shell::default()
    })
    .await;
    let out = run(&c, json!({ "program": "printf", "args": ["abcdefgh"] }))
        .await
        .unwrap();
    assert_eq!((out.stdout.as_str(), out.stdout_truncated), ("abcd", true));
    let out = run(&c, json!({ "program": "printf", "args": ["abc"] }))
        .await
        .unwrap();
    assert_eq!((out.stdout.as_str(), out.stdout_truncated), ("abc", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_are_never_interpolated() {
    let c = coordinator(Shell::default()).await;
    let dir = scratch("verbatim");
    let canary = dir.join("canary");
    std::fs::write(&canary, "alive").unwrap();
    let args = vec![
        format!("; rm -rf {}", canary.display()),
        format!("$(rm {})", canary.display()),
        format!("`rm {}`", canary.display()),
        "$(id)".to_string(),
        "*".to_string(),
        "| true && $HOME".to_string(),
    ];
    let out = run(&c, json!({ "program": "echo", "args": args }))
        .await
        .unwrap();
    assert_eq!(out.stdout, format!("{}\n", args.join(" ")));
    assert_eq!(out.exit_code, Some(0));
    // With a shell, text passed as `args` stays data too (`"$1"`).
    let out = run(
        &c,
        json!({ "program": "printf '%s' \"$1\"", "shell": true, "args": [&args[1]] }),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, args[1]);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "alive");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_holds_only_the_allowlist() {
    // Cargo sets this for the test process: the child must not see it.
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "run under cargo test, which sets CARGO_MANIFEST_DIR"
    );
    let c = coordinator(Shell::default()).await;
    let out = run(
        &c,
        json!({ "program": "env", "env": { "LANG": "C.wrangle" } }),
    )
    .await
    .unwrap();
    let names: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert!(!out.stdout.contains("CARGO_MANIFEST_DIR"), "{}", out.stdout);
    assert!(
        names.iter().all(|n| ["PATH", "HOME", "LANG"].contains(n)),
        "{names:?}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "LANG=C.wrangle"),
        "{}",
        out.stdout
    );

    let error = refused(
        &c,
        json!({ "program": "env", "env": { "LD_PRELOAD": "/x.so" } }),
    )
    .await;
    assert!(error.contains("env.LD_PRELOAD"), "{error}");

    // The allowlist is the handler's to set.
    let c = coordinator(Shell {
        env_allowlist: vec!["CARGO_MANIFEST_DIR".into()],
        ..Shell::default()
    })
    .await;
    let out = run(&c, json!({ "program": "/usr/bin/env" })).await.unwrap();
    assert!(
        out.stdout.starts_with("CARGO_MANIFEST_DIR=") && out.stdout.lines().count() == 1,
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_stdin_and_cwd_come_back_as_answers() {
    let c = coordinator(Shell::default()).await;
    let out = run(
        &c,
        json!({ "program": "sh", "args": ["-c", "echo oops >&2; exit 3"] }),
    )
    .await
    .unwrap();
    assert_eq!(
        (out.exit_code, out.signal, out.timed_out),
        (Some(3), None, false)
    );
    assert_eq!(out.stderr, "oops\n");
    let out = run(&c, json!({ "program": "cat", "stdin": "hello\nworld" }))
        .await
        .unwrap();
    assert_eq!(out.stdout, "hello\nworld");
    let dir = scratch("cwd");
    let out = run(&c, json!({ "program": "pwd", "cwd": dir }))
        .await
        .unwrap();
    assert_eq!(
        Path::new(out.stdout.trim()).canonicalize().unwrap(),
        dir.canonicalize().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let c = coordinator(Shell::default()).await;
    let cases = [
        (
            json!({ "program": "wrangle-no-such-program" }),
            "program: `wrangle-no-such-program` not found",
        ),
        (json!({ "program": "" }), "program:"),
        (json!({ "program": "x".repeat(5000) }), "program:"),
        (
            json!({ "program": "echo", "args": vec!["a"; 2000] }),
            "args:",
        ),
        (
            json!({ "program": "echo", "args": ["ok", "a\u{0}b"] }),
            "args[1]:",
        ),
        (
            json!({ "program": "echo", "stdin": "x".repeat(2 * MIB) }),
            "stdin:",
        ),
        (json!({ "program": "echo", "timeout_ms": 0 }), "timeout_ms:"),
        (
            json!({ "program": "echo", "timeout_ms": 86_400_000u64 }),
            "timeout_ms:",
        ),
        (json!({ "program": "echo", "cwd": "/no/such/dir" }), "cwd:"),
        (
            json!({ "program": "echo", "env": { "PATH": "a\u{0}" } }),
            "env.PATH:",
        ),
    ];
    for (input, expected) in cases {
        let error = refused(&c, input.clone()).await;
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let c = coordinator(Shell {
        kill_grace: Duration::from_millis(200),
        ..Shell::default()
    })
    .await;
    // Ignored signals stay ignored across exec: the `sleep` ignores SIGTERM too.
    let out = run(
        &c,
        json!({ "program": "trap '' TERM; sleep 30 & echo $!; wait", "shell": true, "timeout_ms": 300 }),
    )
    .await
    .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(9), "stopped by SIGKILL: {out:?}");
    let pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("the pid the script printed");
    eventually("the grandchild to be gone", Duration::from_secs(10), || {
        !alive(pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_program_leaves_running_is_stopped_when_it_exits() {
    let c = coordinator(Shell::default()).await;
    let out = run(
        &c,
        json!({ "program": "sleep 30 >/dev/null 2>&1 & echo $!", "shell": true }),
    )
    .await
    .unwrap();
    assert_eq!((out.exit_code, out.timed_out), (Some(0), false), "{out:?}");
    let pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("the pid the script printed");
    eventually("the leftover to be gone", Duration::from_secs(10), || {
        !alive(pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_allowlist_refuses_other_programs_and_scripts() {
    let c = coordinator(Shell {
        allowed_programs: Some(vec!["echo".into()]),
        ..Shell::default()
    })
    .await;
    let out = run(&c, json!({ "program": "echo", "args": ["hi"] }))
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\n");
    let e = refused(&c, json!({ "program": "rm", "args": ["-rf", "/tmp/x"] })).await;
    assert!(e.contains("program") && e.contains("allowed: echo"), "{e}");
    // A path to an allowed name is another program.
    let e = refused(&c, json!({ "program": "/bin/echo" })).await;
    assert!(e.contains("not an allowed program"), "{e}");
    let e = refused(&c, json!({ "program": "echo", "shell": true })).await;
    assert!(
        e.contains("shell") && e.contains("scripts are not allowed"),
        "{e}"
    );
}
