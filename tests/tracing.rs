//! Trace ids: every task has one (its own id, or the one it was submitted with), the
//! handler sees it, the attempt's `task` span carries it into every log line the handler
//! writes, it survives a restart in the store, a workflow's steps share their run's, and
//! HTTP takes it from a `traceparent` header.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wrangle::prelude::*;
use wrangle::workflow::{Step, Workflow};
use wrangle::{StoreConfig, TraceId};

/// Log lines written by the test's subscriber.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A handler that logs a line and answers with the trace id it sees.
fn traced() -> impl TaskHandler {
    handler_fn(|ctx: TaskContext, _: Value| async move {
        tracing::info!(marker = "inside-the-handler", "working");
        Ok::<_, TaskError>(ctx.trace_id().to_string())
    })
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        min_workers: 1,
        max_workers: 1,
        auto_scale: false,
        ..CoordinatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_has_a_trace_id_that_its_logs_carry_and_the_store_keeps() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .with_env_filter("info")
        .init();

    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::sqlite(dir.path().join("trace.db"));
    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            store: Some(store.clone()),
            ..config()
        })
        .handler("traced", traced())
        .start()
        .await
        .unwrap();

    // Without one, a task's trace id is its own id.
    let handle = c
        .submit_async(TaskSpec::new("traced", &json!({})).unwrap())
        .await
        .unwrap();
    let seen: String = handle.result(Duration::from_secs(10)).await.unwrap();
    let own = TraceId::from(handle.id);
    assert_eq!(seen, own.to_string());

    // Given one, the handler sees it, and the handler's log line is in its span.
    let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
    let handle = c
        .submit_async(TaskSpec::new("traced", &json!({})).unwrap().trace_id(trace))
        .await
        .unwrap();
    let seen: String = handle.result(Duration::from_secs(10)).await.unwrap();
    assert_eq!(seen, trace.to_string());
    let logged = lines.text();
    let line: Value = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["marker"] == "inside-the-handler"
                && l["span"]["trace_id"] == trace.to_string()
        })
        .unwrap_or_else(|| panic!("no handler log line in the task's span:\n{logged}"));
    assert_eq!(line["span"]["name"], "task");
    assert_eq!(line["span"]["task_id"], handle.id.to_string());
    assert_eq!(line["span"]["attempt"], 1);

    // A workflow's steps share their run's trace: the run's id.
    c.workflows()
        .register(
            Workflow::new("traced-flow").step(Step::task("one", "traced").output_key("trace")),
        )
        .await
        .unwrap();
    let run = c.workflows().start("traced-flow", json!({})).await.unwrap();
    let done = c
        .workflows()
        .wait(run, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        done.state["trace"],
        json!(run.to_string().replace('-', "")),
        "{done:?}"
    );

    // Stored: a task waiting for a type nobody runs yet keeps its trace id over a restart,
    // and the worker of the next coordinator runs it in that trace.
    let waiting = c
        .queue()
        .submit(TaskSpec::new("later", &json!({})).unwrap().trace_id(trace))
        .await
        .unwrap()
        .id;
    c.stop(false).await.unwrap();
    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            store: Some(store),
            ..config()
        })
        .handler("later", traced())
        .start()
        .await
        .unwrap();
    let task = c.get_task(waiting).await.unwrap();
    assert_eq!(task.options.trace_id, Some(trace));
    let outcome = c.wait_for(waiting, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        outcome,
        TaskOutcome::Completed {
            result: Payload::encode(&trace.to_string()).unwrap()
        }
    );
    c.stop(true).await.unwrap();
}
