//! The agent crash test: the `agent` example (a model that calls a shell tool, run as a
//! durable workflow on SQLite) talks to a scripted OpenAI-compatible server inside the
//! test. The model asks for a tool on each of its first four turns and answers on the
//! fifth. The third model call is held unanswered, the program is killed (SIGKILL) while
//! it waits, and the same command is run again: it resumes the run from its journal and
//! finishes it. The server's log of model calls must show every turn asked once, except
//! the one in flight at the kill, asked twice; the test prints those counts.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[path = "support/programs.rs"]
mod programs;
use programs::{example_binary, Program};

const TURNS: usize = 5;
/// The turn whose first model call is held, so the kill finds it in flight.
const HELD: usize = 2;

/// The turn a model call is for: the replies already in its conversation.
fn turn_of(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count())
}

async fn completions(
    State(log): State<Arc<Mutex<Vec<usize>>>>,
    Json(body): Json<Value>,
) -> Response {
    let turn = turn_of(&body);
    let first = {
        let mut log = log.lock().unwrap();
        log.push(turn);
        log.iter().filter(|t| **t == turn).count() == 1
    };
    if turn == HELD && first {
        // Never answered: the program is killed while it waits.
        std::future::pending::<()>().await;
    }
    let message = if turn + 1 < TURNS {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call{turn}"), "type": "function",
            "function": {"name": "shell", "arguments": json!({"program": "echo", "args": [format!("turn {turn}")]}).to_string()},
        }]})
    } else {
        json!({"role": "assistant", "content": "all turns done"})
    };
    Json(json!({
        "choices": [{"message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }))
    .into_response()
}

fn agent(url: &str, db: &str) -> Command {
    let mut c = Command::new(example_binary("agent"));
    c.args([
        "--base-url",
        url,
        "--model",
        "scripted",
        "--database-url",
        db,
    ])
    .args(["--allow-program", "echo", "--max-turns", "10"])
    .args(["--prompt", "run the tools"])
    .env("RUST_LOG", "warn")
    .env_remove("OPENAI_API_KEY")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_resumes_without_repeating_model_calls() {
    let log: Arc<Mutex<Vec<usize>>> = Arc::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("agent.db").display());

    let (u, d, l) = (url.clone(), db.clone(), log.clone());
    let stdout = tokio::task::spawn_blocking(move || {
        let mut p = Program(agent(&u, &d).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        while !l.lock().unwrap().contains(&HELD) {
            assert!(
                p.0.try_wait().unwrap().is_none(),
                "the agent ended before the kill"
            );
            assert!(Instant::now() < deadline, "turn {HELD} was never asked");
            std::thread::sleep(Duration::from_millis(5));
        }
        p.0.kill().unwrap(); // SIGKILL, while the model call of turn HELD is in flight
        p.0.wait().unwrap();
        let out = agent(&u, &d).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "the resumed agent failed: {stdout}");
        stdout
    })
    .await
    .unwrap();

    let mut asked: BTreeMap<usize, usize> = BTreeMap::new();
    for turn in log.lock().unwrap().iter() {
        *asked.entry(*turn).or_default() += 1;
    }
    println!("model calls per turn: {asked:?} (turn {HELD} was in flight at the kill)");
    let expected: BTreeMap<usize, usize> = (0..TURNS)
        .map(|t| (t, if t == HELD { 2 } else { 1 }))
        .collect();
    assert_eq!(asked, expected, "no completed model call may be repeated");
    assert!(stdout.contains("resuming run"), "{stdout}");
    assert!(stdout.contains("[assistant] all turns done"), "{stdout}");
    // Every tool ran and its result reached the model, in order.
    for turn in 0..TURNS - 1 {
        assert!(
            stdout.contains(&format!("turn {turn}\\n")),
            "tool result of turn {turn}: {stdout}"
        );
    }
    assert!(
        stdout.contains("usage: 5 turns, 50 prompt tokens, 10 completion tokens"),
        "{stdout}"
    );
}
