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
    // Each streamed piece reached the event stream as progress of that task.
    let mut pieces = 0;
    while let Ok(event) = events.try_recv() {
        if let EventKind::TaskProgress {
            id: of, message, ..
        } = &event.kind
        {
            if *of == id {
                assert!(
                    message.contains("choices"),
                    "an OpenAI stream chunk: {message}"
                );
                pieces += 1;
            }
        }
    }
    assert!(pieces >= 2, "the answer arrived in pieces ({pieces})");
    c.stop(true).await.unwrap();
    compute.stop().await;
}
