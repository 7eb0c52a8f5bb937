//! wrangle mounted inside an application's own axum router (`examples/embed.rs`, run as a
//! program): the application's routes answer beside wrangle's, wrangle's API, dashboard and
//! token check work under the `/wrangle` prefix, and the WebSocket event stream carries the
//! application's tasks.

#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "embedded-t0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_serves_its_routes_beside_wrangle_under_a_prefix() {
    let port = net::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _app = programs::Program(
        Command::new(programs::example_binary("embed"))
            .arg(&addr)
            .env("WRANGLE_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the application did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The event stream, open before the application's task runs.
    let mut req = format!("ws://{addr}/wrangle/events/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Without the token the handshake is refused.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/wrangle/events/ws")).await;
    assert!(refused.is_err(), "a WebSocket without a token was accepted");

    // The application's own route runs a task on wrangle and answers with its result.
    let answer: Value = http
        .post(format!("{base}/run"))
        .json(&json!({"text": "hello embedded world"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"words": 3, "shout": "HELLO EMBEDDED WORLD"}));

    // Its task's events arrive on the socket.
    let completed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(msg) = ws.next().await {
            if let Message::Text(text) = msg.unwrap() {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["event"] == "task_completed" {
                    return event;
                }
            }
        }
        panic!("the socket closed");
    })
    .await
    .expect("no task_completed event on the WebSocket");
    assert!(completed["id"].is_string(), "{completed}");
    ws.send(Message::Close(None)).await.unwrap();

    // wrangle's routes under the prefix, behind its token; the application's are its own.
    let stats = http
        .get(format!("{base}/wrangle/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 401);
    let stats: Value = http
        .get(format!("{base}/wrangle/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["queue"]["completed"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The dashboard at `/wrangle`: its links resolve under the prefix.
    let page = http.get(format!("{base}/wrangle")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<base href=\"/wrangle/\">"), "{html}");
    assert!(html.contains("src=\"assets/app.js\""));
    let script = http
        .get(format!("{base}/wrangle/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
}
