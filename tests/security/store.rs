//! Security tests: the store boundary. Text no database takes (a NUL byte, which
//! PostgreSQL refuses in TEXT columns) and text of any length reach the store from handler
//! errors, task payloads and results; none of it may stop the store.

use std::time::Duration;

use serde_json::json;
use wrangle::{Coordinator, CoordinatorConfig, StoreConfig, TaskSpec, TaskStatus};

use crate::common::{fixed, handlers};

const WAIT: Duration = Duration::from_secs(10);

/// One test per backend for each scenario below.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$scenario(crate::databases::sqlite_url(dir.path(), "store")).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(url) = crate::databases::fresh_postgres(stringify!($scenario)).await
                    else {
                        return;
                    };
                    super::$scenario(url.clone()).await;
                    crate::databases::drop_postgres(&url).await;
                }
            )*
        }
    };
}

on_both!(
    a_nul_in_an_error_message_fails_its_task_and_the_store_goes_on,
    a_nul_escape_in_a_payload_and_a_result_is_stored_unchanged,
    an_oversized_error_message_is_cut_to_the_documented_bound,
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
