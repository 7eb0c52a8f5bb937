//! Settings from files, the environment and secrets files, and their checks. The
//! environment is given as `(VARIABLE, value)` pairs, passed as the flags those variables
//! belong to (`cli::tests::parse_env`): clap reads a variable exactly as its flag.

use std::time::Duration;

use super::*;

impl Settings {
    /// The coordinator program's settings from `file` and the variables `env`.
    fn load_with(file: Option<&Path>, env: Vec<(String, String)>) -> Result<Self, Error> {
        let mut flags = Vec::new();
        if let Some(path) = file {
            flags.push(format!("--config={}", path.display()));
        }
        cli::tests::parse_env(&flags, &env)?.settings()
    }
}

#[test]
fn the_cookie_comes_from_a_file_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookie");
    std::fs::write(&path, "s3cret\n").unwrap();
    let s = Settings::load_with(
        None,
        env(&[("WRANGLE_COOKIE_FILE", path.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(s.cookie.as_deref(), Some("s3cret"));
    let s =
        Settings::load_with(None, env(&[("WRANGLE_TOKEN_FILE", path.to_str().unwrap())])).unwrap();
    assert_eq!(s.token.as_deref(), Some("s3cret"));
    std::fs::write(&path, "\n").unwrap();
    let err = Settings::load_with(
        None,
        env(&[("WRANGLE_COOKIE_FILE", path.to_str().unwrap())]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cookie-file") && err.contains("empty"),
        "{err}"
    );
    std::fs::write(&path, "x".repeat(5000)).unwrap();
    let err = read_secret_file("cookie_file", &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cookie_file") && err.contains("5000 bytes"),
        "{err}"
    );
    let missing = dir.path().join("missing");
    let err = read_secret_file("cookie_file", &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cookie_file"), "{err}");
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn file_then_env_override() {
    let dir = std::env::temp_dir().join(format!("wrangle-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(
        &path,
        "min_workers = 3\nmax_workers = 6\nlabels = [\"gpu\"]\n",
    )
    .unwrap();
    let s = Settings::load_with(
        Some(&path),
        env(&[("WRANGLE_MAX_WORKERS", "9"), ("HOME", "/x")]),
    )
    .unwrap();
    assert_eq!((s.min_workers, s.max_workers), (3, 9));
    assert_eq!(s.labels, vec!["gpu".to_string()]);
    std::fs::write(&path, "min_wrokers = 3\n").unwrap();
    let err = Settings::load_with(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_wrokers"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn leases_aging_retention_and_handshake_bounds_reach_their_configs() {
    let s = Settings::load_with(
        None,
        env(&[
            ("WRANGLE_LEASE_TIME_SECS", "5"),
            ("WRANGLE_PRIORITY_AGING_SECS", "30"),
            ("WRANGLE_RETENTION_MAX_TASKS", "0"),
            ("WRANGLE_RETENTION_MAX_BYTES", "2000000"),
        ]),
    )
    .unwrap();
    let c = s.coordinator_config();
    assert_eq!(c.queue.lease_time, Duration::from_secs(5));
    let cluster = Settings::load_with(
        None,
        env(&[
            ("WRANGLE_CLUSTER_LISTEN", "127.0.0.1:7450"),
            ("WRANGLE_COOKIE", "c"),
            ("WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS", "750"),
            ("WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES", "3"),
        ]),
    )
    .unwrap()
    .coordinator_config()
    .cluster
    .unwrap();
    assert_eq!(cluster.handshake_timeout, Duration::from_millis(750));
    assert_eq!(cluster.max_pending_handshakes, 3);
    assert_eq!(c.queue.priority_aging, Some(Duration::from_secs(30)));
    let store = s.store_config().unwrap();
    assert_eq!(store.retention_max_tasks, None);
    assert_eq!(store.retention_max_bytes, Some(2_000_000));
    let defaults = Settings::default().coordinator_config();
    assert_eq!(defaults.queue.priority_aging, None);
    assert_eq!(defaults.queue.lease_time, Duration::from_secs(60));
    // A lease time the queue cannot work with is refused, naming it.
    let err = Settings::load_with(None, env(&[("WRANGLE_LEASE_TIME_SECS", "0")]))
        .and_then(|s| s.validate().map(|_| s))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lease_time"), "{err}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let s = Settings::load_with(
        None,
        env(&[
            ("WRANGLE_TOKEN", "t0ken-secret"),
            ("WRANGLE_COOKIE", "c00kie-secret"),
            ("DATABASE_URL", "postgres://app:pa55word@db:5432/w"),
            ("WRANGLE_CLUSTER_LISTEN", "127.0.0.1:7450"),
        ]),
    )
    .unwrap();
    let shown = format!("{s:?} {:?}", s.coordinator_config());
    for secret in ["t0ken-secret", "c00kie-secret", "pa55word"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("127.0.0.1:7450"), "{shown}");
}

#[test]
fn bad_values_name_the_variable() {
    let err = Settings::load_with(None, env(&[("WRANGLE_MIN_WORKERS", "many")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--min-workers") && err.contains("many"),
        "{err}"
    );
    let err = Settings::load_with(None, env(&[("WRANGLE_MIN_WORKERS", "20")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_workers"), "{err}");
}

#[test]
fn public_bind_without_token_is_refused_unless_dangerously_allowed() {
    let err = Settings::load_with(None, env(&[("WRANGLE_BIND", "0.0.0.0:7700")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token") && err.contains("0.0.0.0:7700"),
        "{err}"
    );
    for with in [
        ("WRANGLE_TOKEN", "s3cret"),
        ("WRANGLE_TOKENS", "read=r3ader"),
        ("WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN", "true"),
    ] {
        let s = Settings::load_with(None, env(&[("WRANGLE_BIND", "0.0.0.0:7700"), with])).unwrap();
        assert_eq!(
            s.is_public_without_token(),
            with.0.starts_with("WRANGLE_DANGER")
        );
    }
    let s = Settings::load_with(None, env(&[("WRANGLE_BIND", "[::1]:7700")])).unwrap();
    assert!(!s.is_public_without_token(), "loopback needs no token");
}

#[test]
fn empty_tokens_are_configuration_errors() {
    for pairs in [
        &[("WRANGLE_TOKEN", "")][..],
        &[("WRANGLE_TOKEN", "  ")][..],
        &[("WRANGLE_TOKENS", "read=")][..],
        &[("WRANGLE_TOKENS", "=abc")][..],
        &[("WRANGLE_TOKENS", "reed=abc")][..],
    ] {
        let err = Settings::load_with(None, env(pairs));
        assert!(err.is_err(), "{pairs:?} was accepted");
    }
    let s =
        Settings::load_with(None, env(&[("WRANGLE_TOKENS", "read+submit=a=b, admin=c")])).unwrap();
    assert_eq!(s.tokens.len(), 2);
    assert_eq!(s.tokens[0].token, "a=b");
    assert_eq!(s.tokens[0].scopes.len(), 2);
    let toml_tokens: Settings =
        toml::from_str("tokens = [{ token = \"x\", scopes = [\"operate\"] }]").unwrap();
    assert_eq!(toml_tokens.tokens[0].scopes.len(), 1);
}

#[test]
fn compute_nodes_come_from_the_file_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        r#"
[compute]
health_interval_secs = 2.5
unhealthy_after = 5
breaker_failure_rate = 0.25
breaker_min_requests = 8
breaker_window_secs = 30
breaker_open_secs = 2.5
breaker_max_open_secs = 120

[[compute.nodes]]
id = "gpu1"
endpoint = "http://10.0.0.5:11434"
labels = { gpu = "a100" }
capabilities = { memory_gb = 80 }
max_concurrent = 4

[[compute.nodes]]
id = "box"
endpoint = "ssh://ada@10.0.0.6"
credential = "box-key"
"#,
    )
    .unwrap();
    let s = Settings::load_with(Some(&path), env(&[])).unwrap();
    let config = s.compute.config().unwrap();
    assert_eq!(
        config.health_interval,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(config.unhealthy_after, 5);
    assert_eq!(config.breaker_failure_rate, 0.25);
    assert_eq!(config.breaker_min_requests, 8);
    assert_eq!(config.breaker_window, std::time::Duration::from_secs(30));
    assert_eq!(
        config.breaker_open_for,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(
        config.breaker_max_open_for,
        std::time::Duration::from_secs(120)
    );
    let nodes = s.compute.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].labels()["gpu"], "a100");
    assert_eq!(nodes[0].concurrency(), 4);
    assert_eq!(nodes[1].credential_name(), Some("box-key"));
    s.validate().unwrap();

    std::fs::write(
        &path,
        "[[compute.nodes]]\nid = \"x\"\nendpoint = \"k8s://Bad_Name\"\n",
    )
    .unwrap();
    let err = Settings::load_with(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("compute.nodes") && err.contains("[0] (id `x`)") && err.contains("deployment"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[[compute.nodes]]\nid = \"x\"\nendpont = \"http://h:1\"\n",
    )
    .unwrap();
    let err = Settings::load_with(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpont"), "a typo is refused: {err}");
}

#[test]
fn bad_breaker_settings_are_named() {
    for (line, field) in [
        ("breaker_open_secs = 0", "compute.breaker_open_secs"),
        ("breaker_window_secs = -1", "compute.breaker_window_secs"),
        ("breaker_max_open_secs = 1", "compute.breaker_max_open_secs"),
        ("breaker_failure_rate = 2", "breaker_failure_rate"),
        ("breaker_min_requests = 0", "breaker_min_requests"),
    ] {
        let s: Settings = toml::from_str(&format!("[compute]\n{line}\n")).unwrap();
        match s.compute.config().unwrap_err() {
            Error::Invalid { field: f, .. } => assert_eq!(f, field, "{line}"),
            e => panic!("{line}: {e}"),
        }
    }
}

#[test]
fn node_groups_come_from_the_file_with_their_launchers_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    let write = |groups: &str| {
        std::fs::write(
            &path,
            format!(
                "cluster_listen = \"127.0.0.1:7450\"\ncookie = \"s3cret\"\n\
                 [[compute.nodes]]\nid = \"lab1\"\nendpoint = \"ssh://ada@10.0.0.6\"\ncredential = \"k\"\n\
                 {groups}"
            ),
        )
        .unwrap();
        Settings::load_with(Some(&path), env(&[]))
    };
    let s = write(
        r#"
[[node_groups]]
name = "gpu"
labels = ["gpu=a100"]
task_types = ["infer"]
max_nodes = 3
idle_timeout_secs = 90.5
launcher = { kind = "docker", image = "wrangle-node:1", args = ["--workers", "2"], memory_mb = 512 }

[[node_groups]]
name = "lab"
task_types = ["sleep"]
join = "10.0.0.1:7450"
launcher = { kind = "ssh", hosts = ["lab1"], program = "/opt/wrangle/node" }

[[node_groups]]
name = "local"
task_types = ["echo"]
launcher = { kind = "process", program = "/usr/local/bin/wrangle-node" }

[[node_groups]]
name = "pods"
task_types = ["echo"]
launcher = { kind = "kubernetes", namespace = "agents", image = "wrangle-node:1", requests = { cpu = "500m", memory = "1Gi" } }
"#,
    )
    .unwrap();
    s.validate().unwrap();
    let gpu = s.node_groups[0].config().unwrap();
    assert_eq!(gpu.max_nodes, 3);
    assert_eq!(gpu.idle_timeout, Duration::from_millis(90_500));
    assert_eq!(gpu.join_timeout, Duration::from_secs(60), "a default");
    assert_eq!(
        s.node_groups[1].config().unwrap().join.as_deref(),
        Some("10.0.0.1:7450")
    );

    let refused = |groups: &str, field: &str| {
        let err = match write(groups) {
            Ok(s) => s.validate().unwrap_err(),
            Err(e) => e,
        }
        .to_string();
        assert!(err.contains(field), "{err} should name {field}");
    };
    refused(
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"ftp\" }\n",
        "ftp",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nlaunchr = { kind = \"process\", program = \"p\" }\n",
        "launchr",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nmin_nodes = 5\nmax_nodes = 2\nlauncher = { kind = \"process\", program = \"p\" }\n",
        "node_groups.min_nodes",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nidle_timeout_secs = -1\nlauncher = { kind = \"process\", program = \"p\" }\n",
        "node_groups.idle_timeout_secs",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"ssh\", hosts = [\"nope\"], program = \"p\" }\n",
        "node_groups.launcher.hosts",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"docker\", image = \"i\", engine = \"nohost\" }\n",
        "node_groups.launcher.engine",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"kubernetes\", namespace = \"Bad_NS\", image = \"i\" }\n",
        "node_groups.launcher.namespace",
    );
    refused(
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"process\", program = \"p\" }\n\
         [[node_groups]]\nname = \"a\"\nlauncher = { kind = \"process\", program = \"p\" }\n",
        "two node groups",
    );
    // Without a cluster, launched nodes would have nothing to join.
    std::fs::write(
        &path,
        "[[node_groups]]\nname = \"a\"\nlauncher = { kind = \"process\", program = \"p\" }\n",
    )
    .unwrap();
    let err = Settings::load_with(Some(&path), env(&[]))
        .and_then(|s| s.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster_listen"), "{err}");
}

#[test]
fn load_shedding_marks_come_from_the_file_and_env_and_bad_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("wrangle-shed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(&path, "shed_low_above = 500\nshed_retry_after_secs = 9\n").unwrap();
    let s = Settings::load_with(Some(&path), env(&[("WRANGLE_SHED_NORMAL_ABOVE", "900")])).unwrap();
    s.validate().unwrap();
    let q = s.coordinator_config().queue;
    assert_eq!(q.shed_low_above, Some(500));
    assert_eq!(q.shed_normal_above, Some(900));
    assert_eq!(q.shed_retry_after, Duration::from_secs(9));
    // Off by default: 0 is no mark.
    let defaults = Settings::default().coordinator_config().queue;
    assert_eq!(
        (defaults.shed_low_above, defaults.shed_normal_above),
        (None, None)
    );
    assert_eq!(defaults.shed_retry_after, Duration::from_secs(5));
    // A normal mark below the low one, or a mark the queue never reaches, is refused by name.
    for (pairs, field) in [
        (
            &[
                ("WRANGLE_SHED_LOW_ABOVE", "50"),
                ("WRANGLE_SHED_NORMAL_ABOVE", "10"),
            ][..],
            "shed_normal_above",
        ),
        (
            &[
                ("WRANGLE_MAX_QUEUE_SIZE", "100"),
                ("WRANGLE_SHED_LOW_ABOVE", "100"),
            ][..],
            "shed_low_above",
        ),
        (
            &[("WRANGLE_SHED_RETRY_AFTER_SECS", "0")][..],
            "shed_retry_after",
        ),
    ] {
        let err = Settings::load_with(None, env(pairs))
            .and_then(|s| s.validate().map(|_| s))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failover_settings_reach_the_store_and_bad_ones_are_named() {
    let s = Settings::load_with(
        None,
        env(&[
            ("WRANGLE_DATABASE_URL", "postgres://u@10.0.0.9/db"),
            ("WRANGLE_LEADER_LEASE_MS", "1200"),
            ("WRANGLE_LEADER_RENEW_MS", "300"),
            ("WRANGLE_BIND", "127.0.0.1:7701"),
        ]),
    )
    .unwrap();
    s.validate().unwrap();
    let store = s.store_config().unwrap();
    assert_eq!(store.leader_lease, Duration::from_millis(1200));
    assert_eq!(store.leader_renew, Duration::from_millis(300));
    assert!(s.is_postgres());
    // Standbys redirect to `bind` unless told otherwise.
    assert_eq!(s.advertised_url().as_deref(), Some("http://127.0.0.1:7701"));
    let defaults = Settings::default().store_config().unwrap();
    assert_eq!(
        (defaults.leader_lease, defaults.leader_renew),
        (Duration::from_secs(3), Duration::from_secs(1))
    );
    for (pairs, field) in [
        (&[("WRANGLE_LEADER_RENEW_MS", "10")][..], "leader_renew_ms"),
        (
            &[
                ("WRANGLE_LEADER_LEASE_MS", "1000"),
                ("WRANGLE_LEADER_RENEW_MS", "600"),
            ][..],
            "leader_lease_ms",
        ),
        (
            &[("WRANGLE_ADVERTISE_URL", "ftp://10.0.0.5")][..],
            "advertise_url",
        ),
        (
            &[("WRANGLE_ADVERTISE_URL", "http://user:pw@10.0.0.5:7700")][..],
            "advertise_url",
        ),
        // On PostgreSQL a wildcard bind says nothing a client could reach.
        (
            &[
                ("WRANGLE_DATABASE_URL", "postgres://u@10.0.0.9/db"),
                ("WRANGLE_BIND", "0.0.0.0:7700"),
                ("WRANGLE_TOKEN", "t0ken"),
            ][..],
            "advertise_url",
        ),
    ] {
        let err = Settings::load_with(None, env(pairs))
            .and_then(|s| s.validate().map(|_| s))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}
