//! The worker protocol over HTTP, driven over real TCP as a worker in another language
//! would: lease, heartbeat, progress, complete and fail; stale and forged tokens refused; a
//! silent worker's tasks back in the queue and finished by another, exactly once; many
//! results in one call (`POST /tasks/wait`, `POST /tasks/run`), as JSON and as NDJSON.

#[path = "support/common.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::eventually;
use serde_json::{json, Value};
use wrangle::api::{ApiConfig, ApiToken, Scope};
use wrangle::{Coordinator, CoordinatorConfig, QueueConfig, TaskStatus, WorkerConfig};

const TOKEN: &str = "w0rker-t0ken";

struct Server {
    coordinator: Coordinator,
    url: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(worker_timeout: Duration, lease_time: Duration) -> Self {
        let handlers = common::handlers();
        let config = CoordinatorConfig {
            min_workers: 1,
            max_workers: 1,
            auto_scale: false,
            worker_timeout,
            health_check_interval: Duration::from_millis(50),
            worker: WorkerConfig {
                heartbeat_interval: worker_timeout / 4,
                ..WorkerConfig::default()
            },
            queue: QueueConfig {
                lease_time,
                ..QueueConfig::default()
            },
            ..CoordinatorConfig::default()
        };
        let coordinator = Coordinator::start(config, handlers).await.unwrap();
        let api = ApiConfig {
            tokens: vec![
                ApiToken::new(TOKEN, [Scope::Read, Scope::Submit, Scope::Work]),
                ApiToken::new("reader", [Scope::Read, Scope::Submit]),
            ],
            ..ApiConfig::default()
        };
        let app = wrangle::api::router(coordinator.clone(), api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(wrangle::api::serve(listener, app, std::future::pending()));
        Self {
            coordinator,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(TOKEN, path, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    async fn submit(&self, tasks: Value) -> Vec<String> {
        let (status, body) = self.post("/tasks", tasks).await;
        assert_eq!(status, 201, "{body}");
        ids(&body["tasks"])
    }

    async fn lease(&self, worker: &str, max: u32, wait: f64) -> Vec<Value> {
        let (status, body) = self
            .post(
                "/workers/lease",
                json!({"worker": worker, "task_types": ["py"], "max_tasks": max, "wait_secs": wait}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["tasks"].as_array().unwrap().clone()
    }

    async fn status_of(&self, id: &str) -> String {
        self.get(&format!("/tasks/{id}")).await["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn ids(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn py_task(n: usize) -> Value {
    json!({"task_type": "py", "payload": {"n": n}, "retries": 2})
}

/// Declares the `py` type (so submits of it are accepted) with a lease call that takes
/// nothing.
async fn declare(s: &Server, worker: &str) {
    assert!(s.lease(worker, 1, 0.0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leases_completes_and_fails_tasks_and_stale_tokens_are_refused() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    // Before any worker declared it, the type is unknown.
    let (status, body) = s.post("/tasks", py_task(0)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "task_type");

    declare(&s, "py-1").await;
    let ids = s.submit(json!([py_task(1), py_task(2)])).await;
    let leases = s.lease("py-1", 10, 5.0).await;
    assert_eq!(leases.len(), 2);
    let by_id: HashMap<String, Value> = leases
        .iter()
        .map(|l| (l["task_id"].as_str().unwrap().to_string(), l.clone()))
        .collect();
    let first = &by_id[&ids[0]];
    assert_eq!(first["payload"], json!({"n": 1}));
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["lease_secs"], 60.0);

    // The worker shows in /workers, busy with two tasks.
    let workers = s.get("/workers").await;
    let me = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "http:py-1")
        .unwrap_or_else(|| panic!("no http:py-1 in {workers}"));
    assert_eq!(me["pool"], "http");
    assert_eq!(me["current_tasks"], 2);

    // Progress under the lease's token is taken.
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{}/progress", ids[0]),
            json!({"worker": "py-1", "token": first["token"], "fraction": 0.5, "message": "half"}),
        )
        .await;
    assert_eq!(status, 202);

    // A forged token (right task, wrong nonce) is refused and changes nothing.
    let token = first["token"].as_str().unwrap();
    let (epoch_attempt, _nonce) = token.rsplit_once('.').unwrap();
    let forged = format!("{epoch_attempt}.0123456789abcdef");
    let (status, body) = s
        .post(
            &format!("/workers/tasks/{}/complete", ids[0]),
            json!({"worker": "py-1", "token": forged, "result": "forged"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(s.status_of(&ids[0]).await, "running");

    // The real token completes it.
    let (status, body) = s
        .post(
            &format!("/workers/tasks/{}/complete", ids[0]),
            json!({"worker": "py-1", "token": token, "result": {"doubled": 2}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = s.get(&format!("/tasks/{}", ids[0])).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"doubled": 2}));
    // Reported twice: the second is stale.
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{}/complete", ids[0]),
            json!({"worker": "py-1", "token": token, "result": "again"}),
        )
        .await;
    assert_eq!(status, 409);

    // A retryable failure retries: attempt 2 comes with a new token, the old one is stale.
    let second = &by_id[&ids[1]];
    let (status, body) = s
        .post(
            &format!("/workers/tasks/{}/fail", ids[1]),
            json!({"worker": "py-1", "token": second["token"], "error": "flaky"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let again = s.lease("py-1", 1, 10.0).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["task_id"], ids[1].as_str());
    assert_eq!(again[0]["attempt"], 2);
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{}/complete", ids[1]),
            json!({"worker": "py-1", "token": second["token"], "result": 1}),
        )
        .await;
    assert_eq!(status, 409, "the first attempt's token must be stale");
    // A permanent failure fails it for good, retries left or not.
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{}/fail", ids[1]),
            json!({"worker": "py-1", "token": again[0]["token"], "error": "bad input", "retryable": false}),
        )
        .await;
    assert_eq!(status, 200);
    let failed = s.get(&format!("/tasks/{}", ids[1])).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "bad input");
    assert!(s.coordinator.get_stats().await.unwrap().queue.stale_reports >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_naming_the_field() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    let cases = [
        (
            "/workers/lease",
            json!({"worker": "a/b", "task_types": ["py"]}),
            "worker",
        ),
        (
            "/workers/lease",
            json!({"worker": "", "task_types": ["py"]}),
            "worker",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": []}),
            "task_types",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": ["a b"]}),
            "task_types",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": ["py"], "max_tasks": 0}),
            "max_tasks",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": ["py"], "max_tasks": 1001}),
            "max_tasks",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": ["py"], "wait_secs": -1}),
            "wait_secs",
        ),
        (
            "/workers/lease",
            json!({"worker": "w", "task_types": ["py"], "extra": 1}),
            "extra",
        ),
        (
            "/workers/heartbeat",
            json!({"worker": "w", "leases": [{"task_id": "00000000-0000-0000-0000-000000000000", "token": "nope"}]}),
            "leases[0].token",
        ),
        (
            "/workers/reports",
            json!({"worker": "w", "reports": [{"task_id": "00000000-0000-0000-0000-000000000000", "token": "1.1.1", "status": "maybe"}]}),
            "reports[0].status",
        ),
        ("/tasks/wait", json!({"ids": ["not-a-uuid"]}), "ids[0]"),
        (
            "/tasks/wait",
            json!({"ids": [], "timeout_secs": -3}),
            "timeout_secs",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = s.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let got = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(field),
            "{path} {body}: field {got:?}, want {field}"
        );
    }
    // A worker that never leased is unknown.
    let (status, _) = s
        .post("/workers/heartbeat", json!({"worker": "ghost"}))
        .await;
    assert_eq!(status, 404);
    // The work scope is needed.
    let (status, _) = s
        .post_as(
            "reader",
            "/workers/lease",
            json!({"worker": "w", "task_types": ["py"]}),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_gets_a_task_submitted_while_it_waits() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    declare(&s, "waiter").await;
    let lease = {
        let url = s.url.clone();
        let http = s.http.clone();
        tokio::spawn(async move {
            let res = http
                .post(format!("{url}/workers/lease"))
                .bearer_auth(TOKEN)
                .json(&json!({"worker": "waiter", "task_types": ["py"], "max_tasks": 5, "wait_secs": 20}))
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()
        })
    };
    // The lease call is waiting once the worker shows as available.
    eventually(
        "the lease call to wait",
        Duration::from_secs(10),
        || async {
            s.get("/workers")
                .await
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["id"] == "http:waiter" && w["is_available"] == true)
        },
    )
    .await;
    let ids = s.submit(py_task(7)).await;
    let got = lease.await.unwrap();
    assert_eq!(got["tasks"][0]["task_id"], ids[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_leases_and_a_silent_worker_loses_its_tasks_to_another() {
    // Leases last 1.5 s unless extended; a worker silent for 3 s is dropped. (Margins wide
    // enough for a loaded machine: a heartbeat is due every 200 ms.)
    let s = Server::start(Duration::from_millis(3000), Duration::from_millis(1500)).await;
    declare(&s, "steady").await;
    let ids = s.submit(json!([py_task(1), py_task(2)])).await;
    let leases = s.lease("steady", 1, 5.0).await;
    assert_eq!(leases.len(), 1);
    let held = leases[0]["task_id"].as_str().unwrap().to_string();
    // Heartbeats every 200 ms for 2.4 s keep the lease (1.5 s) alive well past its time.
    for _ in 0..12 {
        let (status, beat) = s
            .post("/workers/heartbeat", json!({"worker": "steady"}))
            .await;
        assert_eq!(status, 200, "{beat}");
        assert_eq!(beat["refused"], json!([]), "{beat}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.status_of(&held).await, "running");
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{held}/complete"),
            json!({"worker": "steady", "token": leases[0]["token"], "result": "kept"}),
        )
        .await;
    assert_eq!(status, 200);

    // A cancelled task is named in the next heartbeat.
    let other = ids.iter().find(|id| **id != held).unwrap().clone();
    let leases = s.lease("steady", 1, 5.0).await;
    assert_eq!(leases[0]["task_id"], other.as_str());
    let res = s
        .http
        .delete(format!("{}/tasks/{other}", s.url))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "cancel needs operate");
    s.coordinator
        .cancel_task(other.parse().unwrap())
        .await
        .unwrap();
    let (_, beat) = s
        .post("/workers/heartbeat", json!({"worker": "steady"}))
        .await;
    assert_eq!(beat["cancelled"], json!([other]));

    // A worker that leases and goes silent: its task goes back and another finishes it.
    declare(&s, "silent").await;
    let lost = s.submit(py_task(3)).await.remove(0);
    let taken = s.lease("silent", 1, 5.0).await;
    assert_eq!(taken[0]["task_id"], lost.as_str());
    let rescuer = tokio::spawn({
        let url = s.url.clone();
        let http = s.http.clone();
        async move {
            // Keeps leasing (and so stays alive) until it gets the task back.
            loop {
                let res: Value = http
                    .post(format!("{url}/workers/lease"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"worker": "rescuer", "task_types": ["py"], "wait_secs": 0.5}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(t) = res["tasks"].as_array().and_then(|t| t.first()) {
                    return t.clone();
                }
            }
        }
    });
    let rescued = tokio::time::timeout(Duration::from_secs(20), rescuer)
        .await
        .expect("the silent worker's task was never handed out again")
        .unwrap();
    assert_eq!(rescued["task_id"], lost.as_str());
    assert_eq!(rescued["attempt"], 2);
    let (status, _) = s
        .post(
            &format!("/workers/tasks/{lost}/complete"),
            json!({"worker": "rescuer", "token": rescued["token"], "result": "rescued"}),
        )
        .await;
    assert_eq!(status, 200);
    // Its lease ran out (1.5 s without a heartbeat): the late report is stale.
    let late = json!({"worker": "silent", "token": taken[0]["token"], "result": "late"});
    let (status, _) = s
        .post(&format!("/workers/tasks/{lost}/complete"), late.clone())
        .await;
    assert_eq!(status, 409);
    // Past worker_timeout (3 s) it is dropped from /workers, and must lease again.
    eventually(
        "the silent worker to be dropped",
        Duration::from_secs(10),
        || async {
            !s.get("/workers")
                .await
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["id"] == "http:silent")
        },
    )
    .await;
    let (status, _) = s
        .post(&format!("/workers/tasks/{lost}/complete"), late)
        .await;
    assert_eq!(status, 404, "a dropped worker must lease again");
    let task = s.get(&format!("/tasks/{lost}")).await;
    assert_eq!(task["result"], "rescued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_with_one_leaving_finish_every_task_exactly_once() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    declare(&s, "w0").await;
    let total = 600;
    let ids = s
        .submit(Value::Array((0..total).map(py_task).collect()))
        .await;
    let mut workers = Vec::new();
    for w in 0..3 {
        let url = s.url.clone();
        let http = s.http.clone();
        workers.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let mut done = Vec::new();
            loop {
                let res: Value = http
                    .post(format!("{url}/workers/lease"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"worker": name, "task_types": ["py"], "max_tasks": 25, "wait_secs": 1}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let tasks = res["tasks"].as_array().unwrap().clone();
                if tasks.is_empty() {
                    return done;
                }
                if w == 2 && done.len() >= 50 {
                    // This one stops holding a batch: its leases go back at once.
                    let left: Value = http
                        .post(format!("{url}/workers/leave"))
                        .bearer_auth(TOKEN)
                        .json(&json!({"worker": name}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(left["returned"], tasks.len());
                    return done;
                }
                let reports: Vec<Value> = tasks
                    .iter()
                    .map(|t| json!({"task_id": t["task_id"], "token": t["token"], "status": "completed", "result": {"by": name}}))
                    .collect();
                let answer: Value = http
                    .post(format!("{url}/workers/reports"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"worker": name, "reports": reports}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(answer["refused"], json!([]), "{answer}");
                done.extend(tasks.iter().map(|t| t["task_id"].as_str().unwrap().to_string()));
            }
        }));
    }
    let mut completed = Vec::new();
    for w in workers {
        completed.extend(w.await.unwrap());
    }
    let unique: HashSet<&String> = completed.iter().collect();
    assert_eq!(unique.len(), completed.len(), "a task was completed twice");
    assert_eq!(unique.len(), total, "every task completed");
    let wanted: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique, wanted);
    let stats = s.coordinator.get_stats().await.unwrap();
    assert_eq!(stats.queue.completed, total as u64);
    assert_eq!(stats.queue.stale_reports, 0);
}

/// The lines of an NDJSON answer.
async fn lines(res: reqwest::Response) -> Vec<Value> {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_are_awaited_in_one_call() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    // With one unknown id: 10,000, the most one call takes.
    let n = 9_999;
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"task_type": "echo", "payload": i}))
        .collect();
    let ids = s.submit(json!({ "tasks": tasks })).await;
    let missing = "00000000-0000-7000-8000-000000000000";
    let mut asked = ids.clone();
    asked.push(missing.into());
    let res = s
        .http
        .post(format!("{}/tasks/wait", s.url))
        .bearer_auth(TOKEN)
        .header("accept", "application/x-ndjson")
        .json(&json!({"ids": asked, "timeout_secs": 60}))
        .send()
        .await
        .unwrap();
    let lines = lines(res).await;
    let (end, results) = lines.split_last().unwrap();
    assert_eq!(end["done"], true);
    assert_eq!(end["finished"], n);
    assert_eq!(end["unfinished"], json!([]));
    assert_eq!(end["not_found"], json!([missing]));
    let seen: HashSet<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(seen.len(), n);
    let by_id: HashMap<&str, &Value> = results
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_id[ids[1234].as_str()]["result"], 1234);
    assert!(results.iter().all(|r| r["status"] == "completed"));

    // The same as one JSON document.
    let (status, doc) = s.post("/tasks/wait", json!({"ids": &ids[..100]})).await;
    assert_eq!(status, 200);
    assert_eq!(doc["results"].as_array().unwrap().len(), 100);
    assert_eq!(doc["finished"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_names_the_unfinished_tasks() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    declare(&s, "idle").await;
    // Nobody leases `py`: these stay queued.
    let stuck = s.submit(json!([py_task(1), py_task(2)])).await;
    let done = s.submit(json!({"task_type": "echo", "payload": "x"})).await;
    let mut asked = stuck.clone();
    asked.extend(done.clone());
    let res = s
        .http
        .post(format!("{}/tasks/wait", s.url))
        .bearer_auth(TOKEN)
        .header("accept", "application/x-ndjson")
        .json(&json!({"ids": asked, "timeout_secs": 0.5}))
        .send()
        .await
        .unwrap();
    let lines = lines(res).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["id"], done[0].as_str());
    let mut unfinished: Vec<String> = ids(&json!(lines[1]["unfinished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| json!({"id": id}))
        .collect::<Vec<_>>()));
    unfinished.sort();
    let mut want = stuck.clone();
    want.sort();
    assert_eq!(unfinished, want);
    for id in &stuck {
        assert_eq!(s.status_of(id).await, TaskStatus::Queued.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_submitted_and_its_results_streamed_on_one_request() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    let tasks: Vec<Value> = (0..500)
        .map(|i| json!({"task_type": "echo", "payload": {"i": i}}))
        .collect();
    let res = s
        .http
        .post(format!("{}/tasks/run?timeout=60s", s.url))
        .bearer_auth(TOKEN)
        .header("accept", "application/x-ndjson")
        .json(&tasks)
        .send()
        .await
        .unwrap();
    let lines = lines(res).await;
    let submitted = ids(&lines[0]["tasks"]);
    assert_eq!(submitted.len(), 500);
    let end = lines.last().unwrap();
    assert_eq!(end["finished"], 500);
    for r in &lines[1..lines.len() - 1] {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["id"], submitted[i].as_str());
        assert_eq!(r["result"], json!({"i": i}));
    }
    // Without NDJSON: one document; a bad task refuses the whole batch.
    let (status, doc) = s
        .post("/tasks/run", json!([{"task_type": "echo", "payload": 1}]))
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["results"][0]["result"], 1);
    let (status, doc) = s
        .post(
            "/tasks/run",
            json!([{"task_type": "echo"}, {"task_type": "echo", "priority": "urgent"}]),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(doc["error"]["field"], "[1].priority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_header_puts_tasks_in_its_trace_and_workers_see_it() {
    let s = Server::start(Duration::from_secs(30), Duration::from_secs(60)).await;
    declare(&s, "tracer").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let submit = |header: &'static str, body: Value| {
        s.http
            .post(format!("{}/tasks", s.url))
            .bearer_auth(TOKEN)
            .header("traceparent", header)
            .json(&body)
    };
    let res = submit(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        json!([py_task(1), {"task_type": "py", "trace_id": "0af7651916cd43dd8448eb211c80319c"}]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let ids = ids(&res.json::<Value>().await.unwrap()["tasks"]);
    let first = s.get(&format!("/tasks/{}", ids[0])).await;
    assert_eq!(first["options"]["trace_id"], trace);
    let second = s.get(&format!("/tasks/{}", ids[1])).await;
    assert_eq!(
        second["options"]["trace_id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    let leases = s.lease("tracer", 2, 5.0).await;
    let traces: HashSet<&str> = leases
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        traces,
        HashSet::from([trace, "0af7651916cd43dd8448eb211c80319c"])
    );
    // A task without one is in its own trace: its id, without the dashes.
    let own = s.submit(py_task(2)).await.remove(0);
    let lease = s.lease("tracer", 1, 5.0).await;
    assert_eq!(lease[0]["trace_id"], own.replace('-', ""));
    // A malformed header, or trace id, is refused naming it.
    let res = submit("00-zz-00f067aa0ba902b7-01", py_task(3))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["field"],
        "traceparent"
    );
    let (status, body) = s
        .post(
            "/tasks",
            json!({"task_type": "py", "trace_id": "00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "trace_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_counts_pulling_workers_in_the_work_per_worker() {
    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 1,
            max_workers: 8,
            auto_scale: true,
            scale_up_threshold: 10.0,
            scale_cooldown: Duration::ZERO,
            autoscale_interval: Duration::from_millis(50),
            ..CoordinatorConfig::default()
        })
        .handlers(common::handlers())
        .start()
        .await
        .unwrap();
    let pull = c.pull_workers();
    for w in ["a", "b", "c"] {
        let got = pull
            .lease(wrangle::pull::LeaseRequest::new(w, ["py"]).max_tasks(4))
            .await
            .unwrap();
        assert!(got.is_empty());
    }
    // 100 waiting tasks that only the pulling workers run (they are not asking now).
    let specs = (0..100)
        .map(|i| wrangle::TaskSpec::new("py", &i).unwrap())
        .collect();
    c.queue().submit_batch(specs).await.unwrap();
    // 100 waiting over 1 local and 3 pulling workers: 10 workers' worth at the threshold,
    // of which the pulling ones are 3, so the pool grows to 7, not to its max of 8.
    common::eventually("a scale-up", Duration::from_secs(10), || async {
        !c.scale_history().is_empty()
    })
    .await;
    let d = &c.scale_history()[0];
    assert_eq!(d.reason, "backlog", "{d:?}");
    assert_eq!(d.signals.remote_workers, 3, "{d:?}");
    assert_eq!(d.signals.remote_total_slots, 12, "{d:?}");
    assert_eq!(d.to, 7, "{d:?}");
    c.stop(false).await.unwrap();
}
