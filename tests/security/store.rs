//! Security tests: the store boundary. Text no database takes (a NUL byte, which
//! PostgreSQL refuses in TEXT columns) and text of any length reach the store from handler
//! errors, task payloads and results; none of it may stop the store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wrangle::{
    handler_fn, Coordinator, CoordinatorConfig, Error, QueueError, StoreConfig, TaskContext,
    TaskError, TaskSpec, TaskStatus,
};

use crate::common::{eventually, fixed, handlers};

const WAIT: Duration = Duration::from_secs(10);

on_both!(
    a_nul_in_an_error_message_fails_its_task_and_the_store_goes_on,
    a_nul_escape_in_a_payload_and_a_result_is_stored_unchanged,
    an_oversized_error_message_is_cut_to_the_documented_bound,
    a_task_the_database_refuses_for_good_is_refused_and_the_rest_commit,
    a_change_the_database_refuses_for_good_records_the_task_failed,
    a_registry_row_the_database_refuses_for_good_is_dropped,
);

fn on(url: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        store: Some(StoreConfig::new(url)),
        ..fixed(1)
    }
}

async fn started(url: &str) -> Coordinator {
    Coordinator::start(on(url), handlers())
        .await
        .expect("coordinator starts on its store")
}

async fn a_nul_in_an_error_message_fails_its_task_and_the_store_goes_on(url: String) {
    let c = started(&url).await;
    let bad = c
        .submit_async(
            TaskSpec::new(
                "fail",
                &json!({"mode": "permanent", "message": "bad\u{0}byte"}),
            )
            .unwrap()
            .retries(0),
        )
        .await
        .unwrap();
    bad.wait(WAIT).await.unwrap();
    c.queue().flush().await.expect("the failure commits");
    // Later submits still commit, and the store stays healthy.
    let later = c
        .submit_async(TaskSpec::new("echo", &json!("after")).unwrap())
        .await
        .expect("a submit after the NUL commits");
    later.wait(WAIT).await.unwrap();
    c.queue().flush().await.unwrap();
    let store = c.store().unwrap().clone();
    assert!(store.stats().healthy);
    assert_eq!(store.stats().failures, 0, "no commit failed");
    let stored = store.get_task(bad.id).await.unwrap().expect("stored");
    assert_eq!(stored.status, TaskStatus::Failed);
    let error = stored.error.unwrap();
    assert!(!error.contains('\0'), "{error:?}");
    assert!(error.contains("bad\u{FFFD}byte"), "{error:?}");
    let attempt_error = stored.attempts[0].error.clone().unwrap();
    assert!(
        attempt_error.contains("bad\u{FFFD}byte"),
        "{attempt_error:?}"
    );
    assert_eq!(
        store.get_task(later.id).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
    c.stop(true).await.unwrap();
    // And the next start reads it all back.
    let again = started(&url).await;
    assert_eq!(
        again.get_task(bad.id).await.unwrap().status,
        TaskStatus::Failed
    );
    again.stop(true).await.unwrap();
}

async fn a_nul_escape_in_a_payload_and_a_result_is_stored_unchanged(url: String) {
    let c = started(&url).await;
    let input = json!({"text": "nul\u{0}inside", "key\u{0}": ["\u{0}"]});
    let h = c
        .submit_async(TaskSpec::new("echo", &input).unwrap())
        .await
        .unwrap();
    h.wait(WAIT).await.unwrap();
    c.queue().flush().await.unwrap();
    c.stop(true).await.unwrap();
    let again = started(&url).await;
    let t = again
        .store()
        .unwrap()
        .get_task(h.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.payload.decode::<serde_json::Value>().unwrap(), input);
    assert_eq!(
        t.result.unwrap().decode::<serde_json::Value>().unwrap(),
        input,
        "the echoed result, NUL escapes and all"
    );
    assert!(again.store().unwrap().stats().healthy);
    again.stop(true).await.unwrap();
}

async fn an_oversized_error_message_is_cut_to_the_documented_bound(url: String) {
    let c = started(&url).await;
    let message = "é".repeat(100_000); // 200,000 bytes
    let h = c
        .submit_async(
            TaskSpec::new("fail", &json!({"mode": "permanent", "message": message}))
                .unwrap()
                .retries(0),
        )
        .await
        .unwrap();
    h.wait(WAIT).await.unwrap();
    c.queue().flush().await.unwrap();
    let stored = c.store().unwrap().get_task(h.id).await.unwrap().unwrap();
    let error = stored.error.unwrap();
    assert!(error.len() <= 16 * 1024, "{} bytes stored", error.len());
    assert!(error.ends_with(" bytes cut]"), "the cut is marked");
    assert!(error.contains("éé"));
    c.stop(true).await.unwrap();
}

/// Makes the database refuse, for good (a constraint violation, not a retryable error),
/// every task row `condition` (SQL on `NEW`) holds for, on `event` (`INSERT` or `UPDATE`).
async fn refuse_for_good(url: &str, event: &str, condition: &str) {
    refuse_for_good_on(url, "tasks", event, condition).await;
}

/// [`refuse_for_good`] on any table.
async fn refuse_for_good_on(url: &str, table: &str, event: &str, condition: &str) {
    // SQLite: a NOT NULL violation in a table the trigger writes (a trigger's own
    // RAISE(ABORT) counts as curable, like PostgreSQL's plain RAISE EXCEPTION).
    let sql = if url.starts_with("sqlite:") {
        format!(
            "CREATE TABLE IF NOT EXISTS refused_by_the_test (n INTEGER NOT NULL); \
             CREATE TRIGGER refuse_{table}_{event} BEFORE {event} ON {table} WHEN {condition} \
             BEGIN INSERT INTO refused_by_the_test (n) VALUES (NULL); END;"
        )
    } else {
        format!(
            "CREATE FUNCTION refuse_{table}_{event}() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF {condition} THEN RAISE EXCEPTION 'refused_by_the_test' \
             USING ERRCODE = '23514'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_{table}_{event} BEFORE {event} ON {table} \
             FOR EACH ROW EXECUTE FUNCTION refuse_{table}_{event}();"
        )
    };
    crate::databases::execute(url, &sql).await;
}

async fn a_task_the_database_refuses_for_good_is_refused_and_the_rest_commit(url: String) {
    let c = started(&url).await;
    refuse_for_good(&url, "INSERT", "NEW.idempotency_key = 'poison'").await;
    // Submitted together, so that most share a batch with the refused one.
    let mut submits = Vec::new();
    for n in 0..20 {
        let spec = TaskSpec::new("echo", &json!(n)).unwrap();
        let spec = if n == 7 {
            spec.idempotency_key("poison")
        } else {
            spec
        };
        let c = c.clone();
        submits.push(tokio::spawn(async move { c.submit_async(spec).await }));
    }
    let mut stored = Vec::new();
    for (n, submit) in submits.into_iter().enumerate() {
        let result = submit.await.unwrap();
        if n == 7 {
            let Err(Error::Queue(QueueError::NotStored { reason })) = result else {
                panic!("the refused task's submit: {result:?}");
            };
            assert!(reason.contains("refused_by_the_test"), "{reason}");
        } else {
            stored.push(result.expect("the other submits commit"));
        }
    }
    for h in &stored {
        h.wait(WAIT).await.unwrap();
    }
    c.queue().flush().await.expect("the store goes on");
    let store = c.store().unwrap().clone();
    let stats = store.stats();
    assert!(stats.healthy);
    assert_eq!(stats.failures, 0, "nothing was retried");
    assert!(stats.rejected_rows >= 1, "{stats:?}");
    for h in &stored {
        assert_eq!(
            store.get_task(h.id).await.unwrap().map(|t| t.status),
            Some(TaskStatus::Completed)
        );
    }
    // Later submits commit at once.
    let later = c
        .submit_async(TaskSpec::new("echo", &json!("later")).unwrap())
        .await
        .unwrap();
    later.wait(WAIT).await.unwrap();
    c.stop(true).await.unwrap();
}

async fn a_change_the_database_refuses_for_good_records_the_task_failed(url: String) {
    // A handler that finishes only when let through, so the task's completion is a change
    // to a row already stored, never part of its insert.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handlers = handlers();
    let through = gate.clone();
    handlers.register(
        "gated",
        handler_fn(move |_ctx: TaskContext, input: serde_json::Value| {
            let through = through.clone();
            async move {
                through.acquire().await.unwrap().forget();
                Ok::<_, TaskError>(input)
            }
        }),
    );
    let c = Coordinator::start(on(&url), handlers).await.unwrap();
    refuse_for_good(
        &url,
        "UPDATE",
        "NEW.status = 'completed' AND NEW.idempotency_key = 'poison'",
    )
    .await;
    let poisoned = c
        .submit_async(
            TaskSpec::new("gated", &json!("result"))
                .unwrap()
                .idempotency_key("poison"),
        )
        .await
        .expect("its insert is not refused");
    gate.add_permits(1);
    let fine = c
        .submit_async(TaskSpec::new("echo", &json!("fine")).unwrap())
        .await
        .unwrap();
    fine.wait(WAIT).await.unwrap();
    let store = c.store().unwrap().clone();
    eventually(
        "the refused completion to be recorded as a failure",
        WAIT,
        || {
            let store = store.clone();
            async move {
                store.get_task(poisoned.id).await.unwrap().map(|t| t.status)
                    == Some(TaskStatus::Failed)
            }
        },
    )
    .await;
    let t = store.get_task(poisoned.id).await.unwrap().unwrap();
    let error = t.error.unwrap();
    assert!(error.contains("not stored"), "{error}");
    assert!(error.contains("refused_by_the_test"), "{error}");
    c.queue().flush().await.unwrap();
    let stats = store.stats();
    assert!(stats.healthy);
    assert_eq!(stats.failures, 0);
    assert!(stats.rejected_rows >= 1);
    assert_eq!(
        store.get_task(fine.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Completed)
    );
    c.stop(true).await.unwrap();
}

async fn a_registry_row_the_database_refuses_for_good_is_dropped(url: String) {
    // The first run makes the schema; the second's worker rows are refused.
    started(&url).await.stop(true).await.unwrap();
    refuse_for_good_on(&url, "workers", "INSERT", "NEW.status = 'active'").await;
    let c = started(&url).await;
    let h = c
        .submit_async(TaskSpec::new("echo", &json!("runs")).unwrap())
        .await
        .expect("tasks are stored");
    h.wait(WAIT).await.unwrap();
    c.queue().flush().await.unwrap();
    let store = c.store().unwrap().clone();
    eventually("the refused worker rows to be counted", WAIT, || async {
        store.stats().rejected_rows >= 1
    })
    .await;
    let stats = store.stats();
    assert!(stats.healthy);
    assert_eq!(stats.failures, 0, "nothing was retried");
    assert_eq!(
        store.get_task(h.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Completed)
    );
    c.stop(true).await.unwrap();
}
