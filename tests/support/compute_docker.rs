//! Helpers of `tests/compute_docker.rs`: the docker CLI, the test image made without a
//! registry, cleanup guards, a polling wait and request builders.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeConfig, ComputeRequest, ComputeResponse,
};
use wrangle::RestartBudget;

pub(crate) const IMAGE: &str = "wrangle-compute-busybox:test";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "printf", "grep", "kill", "ps", "env", "true", "false",
];

pub(crate) fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

fn run(program: &str, args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The test image, made once per run unless the engine has it already.
fn make_image() -> Result<(), String> {
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let here = dir.path();
    if run("apt-get", &["download", "busybox-static"], here).is_err() {
        run("apt-get", &["update", "-qq"], here)?;
        run("apt-get", &["download", "busybox-static"], here)?;
    }
    let deb = std::fs::read_dir(here)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    run("dpkg-deb", &["-x", deb.to_str().unwrap(), "pkg"], here)?;
    let root = here.join("root");
    for d in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(here.join("pkg/bin/busybox"), root.join("bin/busybox"))
        .map_err(|e| e.to_string())?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .map_err(|e| e.to_string())?;
    }
    run("tar", &["-C", "root", "-cf", "rootfs.tar", "."], here)?;
    let tar = here.join("rootfs.tar");
    docker(&["import", tar.to_str().unwrap(), IMAGE]).map(|_| ())
}

/// Whether the engine answers and the image is there; under `CI=true` a missing engine
/// fails the test.
pub(crate) fn ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let state = READY.get_or_init(|| {
        docker(&["version", "--format", "{{.Server.Version}}"])?;
        make_image()
    });
    match state {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but the Docker engine or the test image is unavailable: {e}");
            }
            eprintln!("\n!!! Docker engine unavailable, Docker compute test NOT RUN: {e} !!!\n");
            false
        }
    }
}

/// Removes this test's containers and its nodes' containers however the test ends.
pub(crate) struct Cleanup {
    pub(crate) node_ids: Vec<String>,
    pub(crate) containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for id in &self.node_ids {
            for c in made_by(id) {
                let _ = docker(&["rm", "-f", &c]);
            }
        }
    }
}

/// A name unique to this run and case.
pub(crate) fn uid(case: &str) -> String {
    format!("wct{}-{case}", std::process::id())
}

/// The containers node `id` made that still exist.
pub(crate) fn made_by(id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=wrangle.compute=1",
        "--filter",
        &format!("label=wrangle.node={id}"),
    ])
    .map(|s| s.lines().map(String::from).collect())
    .unwrap_or_default()
}

/// A test container running `sleep 3600`, labelled and without network.
pub(crate) fn sleeper(name: &str) {
    must(&[
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "wrangle.test=1",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "3600",
    ]);
}

pub(crate) fn fast_checks() -> ComputeConfig {
    ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_secs(5),
        unhealthy_after: 3,
        max_backoff: Duration::from_millis(200),
        ..ComputeConfig::default()
    }
}

pub(crate) async fn cluster() -> ComputeCluster {
    ComputeCluster::start_with("docker", fast_checks(), RestartBudget::default())
        .await
        .unwrap()
}

/// Waits (up to 30 s) until `cond` holds.
pub(crate) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn cmd(argv: &[&str]) -> ComputeRequest {
    ComputeRequest::Command(CommandRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    })
}

pub(crate) fn cmd_stdin(argv: &[&str], stdin: &str) -> ComputeRequest {
    ComputeRequest::Command(CommandRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: Some(stdin.into()),
    })
}

pub(crate) fn output(r: ComputeResponse) -> (Option<i64>, String, String) {
    match r {
        ComputeResponse::Command {
            exit_code,
            stdout,
            stderr,
        } => (exit_code, stdout, stderr),
        other => panic!("not a command's answer: {other:?}"),
    }
}
