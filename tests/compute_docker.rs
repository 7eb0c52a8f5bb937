//! The compute cluster's Docker backend against this machine's Docker engine, through the
//! public API only. The image (`wrangle-compute-busybox:test`) is made here without a
//! registry: Debian's `busybox-static` (`apt-get download`) as a root filesystem, `docker
//! import`ed; it is reused when present. Every container a test makes, and every container
//! its nodes make, is removed when the test ends, however it ends ([`Cleanup`]).
//!
//! With `CI=true` a test fails when the engine is unreachable; elsewhere it says so loudly
//! and passes without running.

use std::time::Duration;

use tokio::sync::mpsc;
use wrangle::compute::{ComputeErrorKind, ComputeNode, Selector, StreamChunk};

#[path = "support/compute_docker.rs"]
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_answer_output_and_exit_code_and_leave_no_container() {
    if !ready() {
        return;
    }
    let id = uid("run");
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![],
    };
    let c = cluster().await;
    c.add_node(ComputeNode::new(&id, &format!("docker://image/{IMAGE}")).unwrap())
        .await
        .unwrap();
    let node = c.node(&id).unwrap();
    let r = node.execute(cmd(&["echo", "a", "b c"])).await.unwrap();
    assert_eq!(output(r), (Some(0), "a b c\n".into(), String::new()));
    let r = node
        .execute(cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .unwrap();
    assert_eq!(output(r), (Some(3), "out\n".into(), "err\n".into()));
    let r = node
        .execute(cmd_stdin(&["cat"], "hello\nworld"))
        .await
        .unwrap();
    assert_eq!(output(r).1, "hello\nworld");
    let r = node.execute(cmd(&["no-such-program"])).await.unwrap_err();
    assert_eq!(r.kind, ComputeErrorKind::Rejected, "{r}");
    assert!(
        made_by(&id).is_empty(),
        "every run's container is removed before its answer"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_as_it_comes_and_a_caller_gone_removes_the_container() {
    if !ready() {
        return;
    }
    let id = uid("stream");
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![],
    };
    let c = cluster().await;
    c.add_node(ComputeNode::new(&id, &format!("docker://image/{IMAGE}")).unwrap())
        .await
        .unwrap();
    let node = c.node(&id).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let script = "echo first; echo warn >&2; sleep 3600";
    let call =
        tokio::spawn(async move { node.execute_streaming(cmd(&["sh", "-c", script]), tx).await });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("output streams while the command runs")
            .expect("a chunk");
        seen.push(chunk);
    }
    assert!(
        seen.contains(&StreamChunk::Stdout("first\n".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&StreamChunk::Stderr("warn\n".into())),
        "{seen:?}"
    );
    assert!(!call.is_finished(), "the command still runs");
    assert_eq!(made_by(&id).len(), 1);
    call.abort();
    until("the dropped run's container is removed", || {
        made_by(&id).is_empty()
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_removes_the_container() {
    if !ready() {
        return;
    }
    let id = uid("timeout");
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![],
    };
    let c = cluster().await;
    let node = ComputeNode::new(&id, &format!("docker://image/{IMAGE}"))
        .unwrap()
        .timeout(Duration::from_secs(2));
    c.add_node(node).await.unwrap();
    let e = c
        .node(&id)
        .unwrap()
        .execute(cmd(&["sleep", "3600"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Timeout, "{e}");
    until("no labelled container of the node remains", || {
        made_by(&id).is_empty()
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_max_concurrent_wait_and_all_complete() {
    if !ready() {
        return;
    }
    let id = uid("slots");
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![],
    };
    let c = cluster().await;
    let node = ComputeNode::new(&id, &format!("docker://image/{IMAGE}"))
        .unwrap()
        .max_concurrent(2);
    c.add_node(node).await.unwrap();
    let node = c.node(&id).unwrap();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let node = node.clone();
            let script = format!("sleep 1; echo {i}");
            tokio::spawn(async move { node.execute(cmd(&["sh", "-c", &script])).await })
        })
        .collect();
    until("two run and two wait", || {
        let info = node.info();
        info.in_flight == 2 && info.waiting == 2
    })
    .await;
    let mut peak = 0;
    while !calls.iter().all(|c| c.is_finished()) {
        peak = peak.max(made_by(&id).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak <= 2,
        "never more than max_concurrent containers: {peak}"
    );
    for (i, call) in calls.into_iter().enumerate() {
        let (code, stdout, _) = output(call.await.unwrap().unwrap());
        assert_eq!((code, stdout), (Some(0), format!("{i}\n")));
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_come_from_the_capabilities_and_runs_have_no_network() {
    if !ready() {
        return;
    }
    let id = uid("limits");
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![],
    };
    let c = cluster().await;
    let node = ComputeNode::new(&id, &format!("docker://image/{IMAGE}"))
        .unwrap()
        .capability("cpu", 0.5)
        .capability("memory_gb", 0.125);
    c.add_node(node).await.unwrap();
    let node = c.node(&id).unwrap();
    let call = tokio::spawn(async move { node.execute(cmd(&["sleep", "3600"])).await });
    until("the run's container exists", || made_by(&id).len() == 1).await;
    let container = made_by(&id).remove(0);
    let seen = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.NetworkMode}}",
        &container,
    ]);
    if seen.is_err() {
        let ended = tokio::time::timeout(Duration::from_secs(10), call).await;
        panic!("{seen:?}: the run ended: {ended:?}");
    }
    assert_eq!(seen, Ok(format!("500000000 {} none", 128 << 20)));
    call.abort();
    until("the container is removed", || made_by(&id).is_empty()).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_exec_in_a_running_container() {
    if !ready() {
        return;
    }
    let (id, box_name) = (uid("exec"), uid("exec-box"));
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![box_name.clone()],
    };
    sleeper(&box_name);
    let c = cluster().await;
    c.add_node(ComputeNode::new(&id, &format!("docker://{box_name}")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.health_check().await.get(&id), Some(&true));
    let node = c.node(&id).unwrap();
    let r = node
        .execute(cmd(&["sh", "-c", "echo $((1+2)); echo oops >&2; exit 5"]))
        .await
        .unwrap();
    assert_eq!(output(r), (Some(5), "3\n".into(), "oops\n".into()));
    let r = node.execute(cmd_stdin(&["cat"], "in\nput")).await.unwrap();
    assert_eq!(output(r), (Some(0), "in\nput".into(), String::new()));
    let (tx, mut rx) = mpsc::channel(16);
    let r = node
        .execute_streaming(cmd(&["printf", "a\\nb\\n"]), tx)
        .await
        .unwrap();
    assert_eq!(output(r).1, "a\nb\n");
    let mut streamed = Vec::new();
    while let Ok(StreamChunk::Stdout(b)) = rx.try_recv() {
        streamed.extend_from_slice(&b);
    }
    assert_eq!(streamed, b"a\nb\n");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_past_its_timeout_is_killed() {
    if !ready() {
        return;
    }
    let (id, box_name) = (uid("exec-timeout"), uid("exec-timeout-box"));
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![box_name.clone()],
    };
    sleeper(&box_name);
    let c = cluster().await;
    let node = ComputeNode::new(&id, &format!("docker://{box_name}"))
        .unwrap()
        .timeout(Duration::from_secs(2));
    c.add_node(node).await.unwrap();
    let e = c
        .node(&id)
        .unwrap()
        .execute(cmd(&["sleep", "7777"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Timeout, "{e}");
    until("the exec'd process is gone", || {
        !must(&["top", &box_name]).contains("7777")
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_containers_and_engines_are_unavailable() {
    if !ready() {
        return;
    }
    let c = cluster().await;
    let (no_image, no_box, no_engine) = (uid("no-image"), uid("no-box"), uid("no-engine"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (id, endpoint) in [
        (
            &no_image,
            "docker://image/wrangle-no-such-image:nope".to_string(),
        ),
        (&no_box, format!("docker://{}", uid("absent"))),
        (
            &no_engine,
            format!("docker+tcp://127.0.0.1:{port}/image/{IMAGE}"),
        ),
    ] {
        c.add_node(ComputeNode::new(id, &endpoint).unwrap())
            .await
            .unwrap();
    }
    let fail = |id: &str| {
        let node = c.node(id).unwrap();
        async move { node.execute(cmd(&["true"])).await.unwrap_err() }
    };
    let e = fail(&no_image).await;
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("No such image"), "{e}");
    let e = fail(&no_box).await;
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("No such container"), "{e}");
    let e = fail(&no_engine).await;
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    let health = c.health_check().await;
    assert!(health.values().all(|ok| !ok), "{health:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_makes_its_node_unhealthy_until_started_again() {
    if !ready() {
        return;
    }
    let (id, box_name) = (uid("stop"), uid("stop-box"));
    let _cleanup = Cleanup {
        node_ids: vec![id.clone()],
        containers: vec![box_name.clone()],
    };
    sleeper(&box_name);
    let c = cluster().await;
    c.add_node(ComputeNode::new(&id, &format!("docker://{box_name}")).unwrap())
        .await
        .unwrap();
    let node = c.node(&id).unwrap();
    let running = {
        let node = node.clone();
        tokio::spawn(async move { node.execute(cmd(&["sleep", "3600"])).await })
    };
    until("the command runs", || node.info().in_flight == 1).await;
    must(&["stop", "-t", "0", &box_name]);
    let e = running.await.unwrap().unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    // Stopped before or while the exec ran: either way the container is not running.
    assert!(
        e.message.contains("stopped") || e.message.contains("exited"),
        "{e}"
    );
    until("the node is unhealthy", || !node.info().health.healthy).await;
    let info = node.info();
    assert!(info.health.consecutive_failures >= 3, "{:?}", info.health);
    assert!(
        info.health
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("exited"),
        "{:?}",
        info.health
    );
    let sent = info.requests;
    assert!(c.select_node(&Selector::new()).is_none());
    let e = node.execute(cmd(&["echo", "hi"])).await.unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert_eq!(node.info().requests, sent, "nothing is sent to the node");
    must(&["start", &box_name]);
    until("the node is healthy again", || node.info().health.healthy).await;
    let r = node.execute(cmd(&["echo", "back"])).await.unwrap();
    assert_eq!(output(r).1, "back\n");
    c.stop().await;
}
