//! The HTTP backend and the `chat` and `http_call` handlers against a real model server
//! (llama.cpp serving Gemma 3 270M, see tests/support/llm.rs): what users' OpenAI-compatible
//! servers really send, whole and streamed, through the whole runtime.

#[path = "support/common.rs"]
mod common;
#[path = "support/llm.rs"]
mod llm;

use serde_json::json;
use wrangle::compute::{ComputeCluster, ComputeNode};
use wrangle::{EventKind, TaskSpec};
use wrangle_actors::{ChatOutput, HttpCallOutput};

use common::{fixed, handlers, secs, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_http_call_tasks_talk_to_a_real_model_whole_and_streamed() {
    let Some(server) = llm::start() else { return };
    let compute = ComputeCluster::start("llm").await.unwrap();
    let node = ComputeNode::new("gemma", &server.url)
        .unwrap()
        .label("model", "gemma3-270m")
        .max_concurrent(2);
    compute.add_node(node).await.unwrap();
    let registry = handlers();
    wrangle_actors::register_compute(&registry, &compute);
    let c = start(fixed(2), registry).await;
    let mut events = c.events().subscribe();

    let models = c
        .submit_async(
            TaskSpec::new(
                "http_call",
                &json!({"request": {"method": "GET", "path": "/v1/models"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let models: HttpCallOutput = models.result(secs(60)).await.unwrap();
    assert_eq!(models.status, 200);
    assert_eq!(models.body["object"], "list", "{}", models.body);

    let ask = |stream: bool| {
        let input = json!({
            "labels": {"model": "gemma3-270m"},
            "model": "gemma",
            "messages": [{"role": "user", "content": "Say hello in one word."}],
            "max_tokens": 16,
            "temperature": 0.0,
            "stream": stream,
        });
        TaskSpec::new("chat", &input).unwrap().retries(2)
    };
    let whole = c.submit_async(ask(false)).await.unwrap();
    let whole: ChatOutput = match whole.result(secs(120)).await {
        Ok(out) => out,
        Err(e) => panic!("{e}; nodes: {:?}", compute.list_nodes()),
    };
    assert_eq!(whole.node, "gemma");
    assert!(!whole.content.trim().is_empty(), "{whole:?}");
    assert!(whole.finish_reason.is_some(), "{whole:?}");

    let streamed = c.submit_async(ask(true)).await.unwrap();
    let id = streamed.id;
    let out: ChatOutput = streamed.result(secs(120)).await.unwrap();
    assert!(!out.content.trim().is_empty(), "{out:?}");
    // Each streamed piece of text reached the event stream, in order, as progress of
    // that task: together they are the reply.
    let mut pieces = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::TaskProgress {
            id: of, message, ..
        } = &event.kind
        {
            if *of == id {
                pieces.push(message.clone());
            }
        }
    }
    assert!(
        pieces.len() >= 2,
        "the answer arrived in pieces ({pieces:?})"
    );
    assert_eq!(pieces.concat(), out.content);
    assert!(
        out.first_token_ms.is_some_and(|t| t <= out.latency_ms),
        "{out:?}"
    );
    let usage = whole.usage.expect("llama.cpp reports usage");
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    c.stop(true).await.unwrap();
    compute.stop().await;
}

/// A cluster with the model server as node `gemma`, and a coordinator running `chat`.
async fn with_model(server: &llm::LlmServer) -> (wrangle::Coordinator, ComputeCluster) {
    let compute = ComputeCluster::start("llm").await.unwrap();
    let node = ComputeNode::new("gemma", &server.url)
        .unwrap()
        .max_concurrent(2);
    compute.add_node(node).await.unwrap();
    let registry = handlers();
    wrangle_actors::register_compute(&registry, &compute);
    (start(fixed(2), registry).await, compute)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_calls_the_tool_that_tool_choice_names() {
    let Some(server) = llm::start() else { return };
    let (c, compute) = with_model(&server).await;
    // llama.cpp's server answers with tool calls only when `tool_choice` names a function.
    let input = json!({
        "model": "gemma",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 64,
        "temperature": 0.0,
    });
    let task = c
        .submit_async(TaskSpec::new("chat", &input).unwrap().retries(2))
        .await
        .unwrap();
    let out: ChatOutput = task.result(secs(120)).await.unwrap();
    assert_eq!(out.tool_calls.len(), 1, "{out:?}");
    let call = &out.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.arguments.is_object(), "{call:?}");
    assert!(!call.id.is_empty());
    // The reply continues the conversation as an assistant message carrying the call.
    assert_eq!(out.message().tool_calls, out.tool_calls);
    c.stop(true).await.unwrap();
    compute.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_streamed_chat_stops_its_stream() {
    let Some(server) = llm::start() else { return };
    let (c, compute) = with_model(&server).await;
    let mut events = c.events().subscribe();
    let long = json!({
        "model": "gemma",
        "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
        "max_tokens": 1500,
        "temperature": 0.0,
        "stream": true,
    });
    let task = c
        .submit_async(TaskSpec::new("chat", &long).unwrap())
        .await
        .unwrap();
    let id = task.id;
    // Wait for the stream to flow, then cancel.
    common::next_event(
        &mut events,
        "the first streamed piece",
        secs(120),
        |e| matches!(e, EventKind::TaskProgress { id: of, .. } if *of == id),
    )
    .await;
    c.cancel_task(id).await.unwrap();
    common::eventually("the task to end cancelled", secs(30), || {
        let c = c.clone();
        async move { c.get_task(id).await.unwrap().status == wrangle::TaskStatus::Cancelled }
    })
    .await;
    while events.try_recv().is_ok() {}
    // The server is free again (two slots, and it generates one stream at a time): a short
    // question is answered, and no more of the cancelled stream arrives meanwhile.
    let short = json!({
        "model": "gemma",
        "messages": [{"role": "user", "content": "Say yes."}],
        "max_tokens": 4,
        "stream": true,
    });
    let next = c
        .submit_async(TaskSpec::new("chat", &short).unwrap())
        .await
        .unwrap();
    let _: ChatOutput = next.result(secs(60)).await.unwrap();
    while let Ok(event) = events.try_recv() {
        if let EventKind::TaskProgress {
            id: of, message, ..
        } = &event.kind
        {
            assert_ne!(*of, id, "the cancelled stream went on: {message:?}");
        }
    }
    c.stop(true).await.unwrap();
    compute.stop().await;
}
