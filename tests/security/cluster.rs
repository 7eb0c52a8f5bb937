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
pub(crate) mod rig;

use rig::{
    all_completed, executions, intruder, node_is, submit, until, Api, Coordinator, RawFrame, COOKIE,
};

const JOIN: Duration = Duration::from_secs(30);

/// This process's ractor process groups are one namespace: the tests that join a
/// coordinator as a peer take turns, so that each finds its own coordinator's gate.
static PEER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The wire version of wrangle's frames (`src/cluster/wire/mod.rs`).
const WIRE_VERSION: u8 = 5;

/// A node's frame as the codec writes it: version, claimed sender, session key, then the
/// body (postcard: an enum is its variant index as a varint, then its fields).
fn frame(from: &str, key: u128, body: impl serde::Serialize) -> RawFrame {
    RawFrame(postcard::to_stdvec(&(WIRE_VERSION, from, key, body)).unwrap())
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
    let _turn = PEER.lock().await;
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
    // An empty batch of worker changes (frame number 1): the smallest report there is.
    gate.cast(frame("victim", 0, (UP, 1u64, Vec::<u8>::new())))
        .unwrap();
    let hello = (
        HELLO,
        (
            99u64,
            Vec::<String>::new(),
            vec!["journal".to_string()],
            "127.0.0.1:1",
            "0",
            8u32,
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
    server.stop_and_wait(None, None).await.unwrap();
}

/// Stands in for a node's agent in this process: every frame the coordinator sends it goes
/// to the test.
struct FakeAgent;

impl ractor::Actor for FakeAgent {
    type Msg = RawFrame;
    type State = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<RawFrame>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ractor::ActorRef<RawFrame>,
        msg: RawFrame,
        tx: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let _ = tx.send(msg.0);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_no_more_tasks_than_its_declared_slots() {
    let _turn = PEER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());

    // `hoarder` is a node written by hand: an agent in its process group, which says hello
    // declaring 2 slots in all, then asks for every task there is.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (agent, _) = ractor::Actor::spawn(None, FakeAgent, tx).await.unwrap();
    ractor::pg::join("wrangle.node.hoarder".to_string(), vec![agent.get_cell()]);
    let (server, gate) = intruder(&c, "hoarder").await;
    const HELLO: u32 = 0;
    const UP: u32 = 1;
    const HEARTBEAT: u32 = 2;
    const ATTACH: u32 = 0;
    const CREDITS: u32 = 2;
    const REPORT: u32 = 3;
    let hello = (
        HELLO,
        (
            1u64,
            Vec::<String>::new(),
            vec!["journal".to_string()],
            "127.0.0.1:1",
            "0",
            2u32,
        ),
    );
    let mut key = None;
    until("a welcome", JOIN, || {
        gate.cast(frame("hoarder", 0, hello.clone())).unwrap();
        // Welcome: version, sender, key, variant 0, heartbeat_ms, timeout_ms, key.
        while let Ok(bytes) = rx.try_recv() {
            if let Ok(((_, _, _, 0u32, _, _, k), _)) =
                postcard::take_from_bytes::<(u8, String, u128, u32, u64, u64, u128)>(&bytes)
            {
                key = Some(k);
            }
        }
        std::future::ready(key.is_some())
    })
    .await;
    let key = key.unwrap();
    // Heartbeats keep it online.
    let beating = gate.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            let load = (
                HEARTBEAT,
                (wrangle::PoolStats::default(), Vec::<u8>::new(), 0u64, 0u64),
            );
            let _ = beating.cast(frame("hoarder", key, load));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let ids = submit(&http, &c, 10, 1, &[]).await;
    let caps = (vec!["journal".to_string()], Vec::<String>::new());
    let attach = (ATTACH, "hoarder/w-1", 1u64, caps, u32::MAX, 8u32);
    gate.cast(frame("hoarder", key, (UP, 1u64, vec![attach])))
        .unwrap();
    // Leases: version, sender, key, variant 2, worker, then how many leases.
    let mut leases = 0;
    until("two leases", JOIN, || {
        while let Ok(bytes) = rx.try_recv() {
            if let Ok(((_, _, _, 2u32, _, n), _)) =
                postcard::take_from_bytes::<(u8, String, u128, u32, String, usize)>(&bytes)
            {
                leases += n;
            }
        }
        std::future::ready(leases >= 2)
    })
    .await;
    // Holding two, it claims every slot there is free: outright, and freed by no report.
    let credits = (CREDITS, "hoarder/w-1", u32::MAX);
    let report = (REPORT, "hoarder/w-1", Vec::<u8>::new(), u32::MAX);
    gate.cast(frame("hoarder", key, (UP, 2u64, vec![credits])))
        .unwrap();
    gate.cast(frame("hoarder", key, (UP, 3u64, vec![report])))
        .unwrap();
    until("three clamps counted", JOIN, || async {
        stats(&http, &c).await["cluster"]["credits_clamped"] == 3
    })
    .await;
    // The queue has handled what the gate passed on before it answers this.
    let s = stats(&http, &c).await;
    assert_eq!(s["queue"]["running"], 2, "{s}");
    assert_eq!(s["cluster"]["online"], 1, "{s}");
    assert_eq!(ids.len(), 10);
    heartbeats.abort();
    ractor::pg::leave("wrangle.node.hoarder".to_string(), vec![agent.get_cell()]);
    agent.stop(None);
    server.stop_and_wait(None, None).await.unwrap();
}

/// Waits until something accepts TCP connections on `port`.
async fn accepting(port: u16) {
    until("the cluster port to accept", JOIN, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_hold_up_no_join_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    rig::certificates(dir.path());
    let http = reqwest::Client::new();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let c = Coordinator::start_with(
        dir.path(),
        net::free_port(),
        net::free_port(),
        &[
            ("WRANGLE_CLUSTER_TLS_CERT", &cert),
            ("WRANGLE_CLUSTER_TLS_KEY", &key),
        ],
    );
    accepting(c.cluster).await;
    // Eight connections that never say a word (not even a TLS hello).
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", c.cluster))
                .await
                .unwrap(),
        );
    }
    let secure = c.tls_node("secure", "tls", &dir.path().join("ca.pem"));
    until("the TLS node online", JOIN, || {
        node_is(&http, &c, "secure", "online")
    })
    .await;
    let ids = submit(&http, &c, 3, 1, &["tls"]).await;
    all_completed(&http, &c, &ids, JOIN).await;
    assert_eq!(executions(&[&secure.journal]).len(), 3);
    // The silent ones are closed by the coordinator (its handshake timeout is 5 s).
    for mut s in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(JOIN, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("a silent connection was sent {n} bytes"),
            Err(_) => panic!("a silent connection was still open after {JOIN:?}"),
        }
    }
    until("the silent connections counted", JOIN, || async {
        stats(&http, &c).await["cluster"]["handshakes_refused"]
            .as_u64()
            .is_some_and(|n| n >= 8)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_make_the_coordinator_buffer_a_frame_before_it_authenticates() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path());
    accepting(c.cluster).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.cluster))
        .await
        .unwrap();
    // A frame header announcing nearly 16 MiB (the frame limit), then 12 MiB of it: the
    // coordinator cuts the connection long before, so the writes fail.
    let chunk = vec![0x5a_u8; 256 * 1024];
    let sent = tokio::time::timeout(JOIN, async {
        s.write_all(&(16u64 * 1024 * 1024 - 1).to_be_bytes())
            .await?;
        for _ in 0..48 {
            s.write_all(&chunk).await?;
        }
        s.flush().await
    })
    .await
    .expect("the writes neither went through nor failed");
    assert!(
        sent.is_err(),
        "an unauthenticated peer got 12 MiB of one frame accepted"
    );
    // The coordinator carries on: a node joins.
    let http = reqwest::Client::new();
    let _node = c.node("after", "zone=z", COOKIE);
    until("a node online", JOIN, || {
        node_is(&http, &c, "after", "online")
    })
    .await;
}
