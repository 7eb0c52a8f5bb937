//! The `chat` handler and the durable agent against a scripted OpenAI-compatible server
//! (axum, inside the test): the fault cases a real provider has (429 with `Retry-After`,
//! slow answers, malformed JSON, a stream cut short, a refusal), and agent loops whose
//! model answers are scripted (tool calls run as their own tasks and go back to the model;
//! a loop that never ends hits the turn limit). The real model server's cases are in the
//! root crate's `tests/compute_llm.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use wrangle::compute::{ComputeCluster, ComputeNode};
use wrangle::workflow::RunStatus;
use wrangle::{handler_fn, Coordinator, TaskContext, TaskError, TaskSpec};
use wrangle_actors::{
    agent_workflow, register_agent, AgentRequest, AgentSpec, AgentTool, AgentTurn, Chat,
    ChatMessage, ChatOutput,
};

/// What the scripted server answers to the `n`th request (0-based) with this body.
type Script = dyn Fn(usize, &Value) -> Response + Send + Sync;

#[derive(Clone)]
struct Server {
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
    script: Arc<Script>,
}

async fn completions(State(s): State<Server>, Json(body): Json<Value>) -> Response {
    let n = {
        let mut seen = s.seen.lock().unwrap();
        seen.push((Instant::now(), body.clone()));
        seen.len() - 1
    };
    if body["messages"][0]["content"] == "slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    (s.script)(n, &body)
}

/// Starts the server; answers its requests log and its URL.
async fn serve(
    script: impl Fn(usize, &Value) -> Response + Send + Sync + 'static,
) -> (Arc<Mutex<Vec<(Instant, Value)>>>, String) {
    let server = Server {
        seen: Arc::default(),
        script: Arc::new(script),
    };
    let seen = server.seen.clone();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

fn reply(content: &str) -> Response {
    Json(json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
    }))
    .into_response()
}

fn tool_call(id: &str, name: &str, args: Value) -> Response {
    Json(json!({
        "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5},
    }))
    .into_response()
}

async fn cluster(url: &str) -> ComputeCluster {
    let compute = ComputeCluster::start("test").await.unwrap();
    compute
        .add_node(ComputeNode::new("model", url).unwrap().max_concurrent(4))
        .await
        .unwrap();
    compute
}

async fn coordinator(compute: &ComputeCluster) -> Coordinator {
    Coordinator::builder()
        .handler("chat", Chat::new(compute.clone()))
        .compute(compute.clone())
        .start()
        .await
        .unwrap()
}

fn ask(extra: Value) -> TaskSpec {
    let mut input = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    TaskSpec::new("chat", &input).unwrap()
}

async fn outcome(c: &Coordinator, spec: TaskSpec) -> Result<ChatOutput, String> {
    let task = c.submit_async(spec).await.unwrap();
    task.result(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_no_earlier_than_its_retry_after() {
    let (seen, url) = serve(|n, _| {
        if n == 0 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "2")],
                "slow down",
            )
                .into_response()
        } else {
            reply("hello")
        }
    })
    .await;
    let compute = cluster(&url).await;
    let c = coordinator(&compute).await;
    let out = outcome(&c, ask(json!({})).retries(3)).await.unwrap();
    assert_eq!(out.content, "hello");
    assert_eq!(out.usage.unwrap().total(), 13);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_permanent_and_broken_answers_retryable() {
    let (seen, url) = serve(|n, body| {
        match body["messages"][0]["content"].as_str().unwrap() {
            "refuse" => (StatusCode::BAD_REQUEST, "no such model").into_response(),
            "garbage" => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"choices\": [",
            )
                .into_response(),
            // A stream cut short: one event, then the end, with no `[DONE]`.
            "cut" => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/event-stream")],
                "data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\ndata: {\"choi",
            )
                .into_response(),
            _ => reply(&format!("answer {n}")),
        }
    })
    .await;
    let compute = cluster(&url).await;
    let c = coordinator(&compute).await;
    let say = |text: &str| json!({"messages": [{"role": "user", "content": text}]});

    let e = outcome(&c, ask(say("refuse")).retries(3))
        .await
        .unwrap_err();
    assert!(e.contains("400") && e.contains("no such model"), "{e}");
    let refusals = seen.lock().unwrap().len();
    assert_eq!(refusals, 1, "a 4xx is not retried");

    let e = outcome(&c, ask(say("garbage")).retries(1))
        .await
        .unwrap_err();
    assert!(e.contains("not JSON"), "{e}");
    let mut cut = say("cut");
    cut["stream"] = true.into();
    let e = outcome(&c, ask(cut).retries(1)).await.unwrap_err();
    assert!(e.contains("cut mid-event"), "{e}");
    // Both were retried once (two attempts each) before they failed.
    assert_eq!(seen.lock().unwrap().len(), 1 + 2 + 2);

    // Bad input never reaches the server, and names the field.
    let e = outcome(&c, ask(json!({"temperature": 9.0})))
        .await
        .unwrap_err();
    assert!(e.contains("temperature"), "{e}");
    let e = outcome(&c, ask(json!({"messages": []}))).await.unwrap_err();
    assert!(e.contains("messages"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_call_times_out_retryably() {
    // The server answers `slow` after 1.5 s: the handler's timeout ends the call first.
    let (seen, url) = serve(|_, _| reply("late")).await;
    let compute = cluster(&url).await;
    let c = coordinator(&compute).await;
    let slow = json!({"timeout_ms": 200, "messages": [{"role": "user", "content": "slow"}]});
    let e = outcome(&c, ask(slow).retries(1)).await.unwrap_err();
    assert!(e.contains("timeout_ms"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 2, "a timeout is retried");
}

/// A coordinator running the agent: its model step, an `add` tool and the workflow.
async fn agent(compute: &ComputeCluster, max_turns: u32) -> Coordinator {
    let handlers = wrangle::HandlerRegistry::new();
    register_agent(&handlers, Chat::new(compute.clone()));
    handlers.register(
        "add",
        handler_fn(|_ctx: TaskContext, args: Value| async move {
            let (a, b) = (args["a"].as_i64(), args["b"].as_i64());
            match (a, b) {
                (Some(a), Some(b)) => Ok(json!(a + b)),
                _ => Err(TaskError::permanent("a and b must be integers")),
            }
        }),
    );
    Coordinator::builder()
        .handlers(handlers)
        .compute(compute.clone())
        .workflow(agent_workflow("agent", max_turns))
        .start()
        .await
        .unwrap()
}

fn request(question: &str) -> Value {
    let spec = AgentSpec::new("m").tool(
        AgentTool::new("add", "add")
            .description("adds two integers")
            .parameters(json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})),
    );
    serde_json::to_value(AgentRequest {
        agent: spec,
        messages: vec![ChatMessage::new("user", question)],
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_tools_as_tasks_and_gives_their_results_back_to_the_model() {
    // Turn 0 adds 2 and 3 and asks for a missing tool; turn 1 adds the result to 10;
    // turn 2 answers.
    let (seen, url) = serve(|n, body| match n {
        0 => Json(json!({"choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}},
                {"id": "c1", "type": "function", "function": {"name": "multiply", "arguments": "{}"}}
            ]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 20, "completion_tokens": 5}}))
        .into_response(),
        1 => {
            let sum: i64 = body["messages"][2]["content"].as_str().unwrap().parse().unwrap();
            tool_call("c2", "add", json!({"a": sum, "b": 10}))
        }
        _ => reply("the answer is 15"),
    })
    .await;
    let compute = cluster(&url).await;
    let c = agent(&compute, 5).await;
    let flows = c.workflows();
    let run = flows
        .start("agent", request("what is 2+3+10?"))
        .await
        .unwrap();
    let done = flows.wait(run, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    let turn: AgentTurn = serde_json::from_value(done.state["turn"].clone()).unwrap();
    assert_eq!(
        (turn.turn, turn.done, turn.reply.as_str()),
        (2, true, "the answer is 15")
    );
    assert_eq!(turn.total_usage.prompt_tokens, 20 + 20 + 10);
    assert_eq!(done.state["tool.0.0"], json!(5));
    assert_eq!(done.state["tool.1.0"], json!(15));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one model call per turn");
    // The second call carries the first turn's calls and both tool messages: the result
    // of `add`, and why `multiply` did not run.
    let m = &seen[1].1["messages"];
    assert_eq!(m[1]["tool_calls"][0]["function"]["name"], "add");
    assert_eq!(
        (m[2]["role"].as_str(), m[2]["tool_call_id"].as_str()),
        (Some("tool"), Some("c0"))
    );
    assert_eq!(m[2]["content"], "5");
    assert!(
        m[3]["content"]
            .as_str()
            .unwrap()
            .contains("no tool `multiply`"),
        "{m}"
    );
    assert_eq!(seen[1].1["tools"][0]["function"]["name"], "add");
    // The final conversation: user, and for each turn the reply and its tool messages.
    let roles: Vec<&str> = turn.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_keeps_calling_tools_stops_at_its_turn_limit() {
    let (seen, url) =
        serve(|n, _| tool_call(&format!("c{n}"), "add", json!({"a": n, "b": 1}))).await;
    let compute = cluster(&url).await;
    let c = agent(&compute, 3).await;
    let flows = c.workflows();
    let run = flows.start("agent", request("loop forever")).await.unwrap();
    let done = flows.wait(run, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    let error = done.error.unwrap_or_default();
    assert!(error.contains("3 iterations"), "{error}");
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "three turns, then it stopped"
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_are_counted_by_node_and_model() {
    let (_, url) = serve(|n, _| {
        if n == 1 {
            (StatusCode::BAD_REQUEST, "no").into_response()
        } else {
            reply("ok")
        }
    })
    .await;
    let compute = cluster(&url).await;
    let c = coordinator(&compute).await;
    outcome(&c, ask(json!({}))).await.unwrap();
    outcome(&c, ask(json!({}))).await.unwrap_err();
    outcome(&c, ask(json!({"model": "other"}))).await.unwrap();
    let usage = compute.model_usage();
    let of = |model: &str| {
        let (_, _, c) = usage
            .iter()
            .find(|(n, m, _)| n == "model" && m == model)
            .unwrap();
        (
            c.requests,
            c.failures,
            c.prompt_tokens,
            c.completion_tokens,
            c.latency.cumulative().1,
        )
    };
    assert_eq!(of("m"), (2, 1, 10, 3, 1));
    assert_eq!(of("other"), (1, 0, 10, 3, 1));
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_model_node_is_open_circuited_low_work_is_shed() {
    let (_, url) = serve(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()).await;
    let compute = cluster(&url).await;
    let c = coordinator(&compute).await;
    // Node faults in a row open the node's breaker: three, unless the node's first
    // health check (which passes: /health answers) lands between them and restarts the row.
    let open = || compute.list_nodes()[0].breaker.state == wrangle::compute::BreakerState::Open;
    for _ in 0..10 {
        if open() {
            break;
        }
        outcome(&c, ask(json!({})).retries(0)).await.unwrap_err();
    }
    assert!(open(), "{:?}", compute.list_nodes()[0].breaker);
    // Within a second or two the coordinator sheds new low-priority work...
    let deadline = Instant::now() + Duration::from_secs(8);
    let refusal = loop {
        let low = ask(json!({})).priority(wrangle::TaskPriority::Low);
        match c.submit_async(low).await {
            Err(e) => break e.to_string(),
            Ok(_) => {
                assert!(Instant::now() < deadline, "low work was never shed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(refusal.contains("circuit breaker is open"), "{refusal}");
    // ...while normal work still enters.
    c.submit_async(ask(json!({})).retries(0)).await.unwrap();
    c.stop(false).await.unwrap();
}
