//! Security tests: the cluster boundary. A coordinator program and node programs run as OS
//! processes on loopback; this test process plays the attacker: a peer that holds the cookie
//! (so it gets past ractor_cluster's handshake) and then claims to be another node, or a
//! client that opens TCP connections and never finishes a handshake.

use std::time::Duration;

use serde_json::Value;

#[allow(dead_code)]
#[path = "../support/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../support/programs.rs"]
mod programs;
#[allow(dead_code)]
#[path = "../support/cluster.rs"]
mod rig;

use rig::{all_completed, executions, node_is, submit, until, Api, Coordinator, COOKIE};

const JOIN: Duration = Duration::from_secs(30);

/// The wire version of wrangle's frames (`src/cluster/wire.rs`).
const WIRE_VERSION: u8 = 2;

/// A frame in whatever bytes the test wants, sent to a remote actor as is.
struct RawFrame(Vec<u8>);

impl ractor::BytesConvertable for RawFrame {
    fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

/// A node's frame as the codec writes it: version, claimed sender, session key, then the
/// body (postcard: an enum is its variant index as a varint, then its fields).
fn frame(from: &str, key: u128, body: impl serde::Serialize) -> RawFrame {
    RawFrame(postcard::to_stdvec(&(WIRE_VERSION, from, key, body)).unwrap())
}

/// This test process as a bare ractor_cluster peer named `name`, holding the cookie,
/// connected to `c`; returns its server and the coordinator's gate.
async fn intruder(
    c: &Coordinator,
    name: &str,
) -> (
    ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    ractor::ActorRef<RawFrame>,
) {
    let server = ractor_cluster::NodeServer::new(
        0,
        COOKIE.to_string(),
        name.to_string(),
        "127.0.0.1".to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr([127, 0, 0, 1].into());
    let (server, _) = ractor::Actor::spawn(None, server, ()).await.unwrap();
    until("the coordinator to listen", JOIN, || async {
        ractor_cluster::client_connect(&server, format!("127.0.0.1:{}", c.cluster))
            .await
            .is_ok()
    })
    .await;
    let remote_gate = || {
        ractor::pg::get_members(&"wrangle.gate".to_string())
            .into_iter()
            .find(|g| !g.get_id().is_local())
    };
    until("the gate's process group to arrive", JOIN, || async {
        remote_gate().is_some()
    })
    .await;
    (server, remote_gate().unwrap().into())
}

async fn stats(http: &reqwest::Client, c: &Coordinator) -> Value {
    http.get(c.url("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn node(http: &reqwest::Client, c: &Coordinator, name: &str) -> Value {
    rig::nodes(http, c)
        .await
        .into_iter()
        .find(|n| n["id"] == name)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_leave_say_hello_or_report_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());
    let victim = c.node("victim", "zone=v", COOKIE);
    until("victim online", JOIN, || {
        node_is(&http, &c, "victim", "online")
    })
    .await;

    // `mallory` holds the cookie and its own session, and claims to be `victim`: without
    // the key the coordinator gave victim's session, with a key it made up, and as a new
    // process of victim's (another instance) saying hello.
    let (server, gate) = intruder(&c, "mallory").await;
    const LEAVE: u32 = 3;
    const UP: u32 = 1;
    const HELLO: u32 = 0;
    gate.cast(frame("victim", 0, LEAVE)).unwrap();
    gate.cast(frame("victim", 12345, LEAVE)).unwrap();
    // An empty batch of worker changes: the smallest report there is.
    gate.cast(frame("victim", 0, (UP, Vec::<u8>::new())))
        .unwrap();
    let hello = (
        HELLO,
        (
            99u64,
            Vec::<String>::new(),
            vec!["journal".to_string()],
            "127.0.0.1:1",
            "0",
        ),
    );
    gate.cast(frame("victim", 0, hello)).unwrap();

    until("four forged frames refused", JOIN, || async {
        stats(&http, &c).await["cluster"]["forged_frames"] == 4
    })
    .await;
    // victim is still registered once, on its own session, and runs its work once each.
    let v = node(&http, &c, "victim").await;
    assert_eq!(v["status"], "online", "{v}");
    assert!(v["lost_reason"].is_null(), "{v}");
    let ids = submit(&http, &c, 8, 1, &["zone=v"]).await;
    all_completed(&http, &c, &ids, JOIN).await;
    let runs = executions(&[&victim.journal]);
    for id in &ids {
        assert_eq!(runs[id], vec![(1, "victim".to_string())], "{id}");
    }
    let s = stats(&http, &c).await;
    assert_eq!(s["cluster"]["lost"], 0, "{s}");
    assert_eq!(s["cluster"]["joins"], 1, "{s}");
    assert_eq!(s["cluster"]["forged_frames"], 4, "{s}");
    let log =
        std::fs::read_to_string(dir.path().join(format!("coordinator-{}.log", c.http))).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains("victim")),
        "{log}"
    );
    server.stop(None);
}
