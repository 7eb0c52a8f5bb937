//! The pod and Secret the launcher asks for, and the names it makes.

use super::*;

fn node() -> NodeLaunch {
    let group = super::super::NodeGroupConfig {
        labels: vec!["gpu=a100".into()],
        env: BTreeMap::from([("RUST_LOG".into(), "info".into())]),
        ..super::super::NodeGroupConfig::new("gpu")
    };
    super::super::launch_request(
        &group,
        "10.0.0.1:7000",
        "s3cret-cookie",
        "gpu-0000abcd".into(),
    )
}

fn env_of(pod: &Pod) -> Vec<EnvVar> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap()
}

#[test]
fn a_pod_has_the_labels_and_environment_but_reads_the_cookie_from_the_secret() {
    let launcher =
        KubernetesLauncher::new("ml", "wrangle-node:1", vec!["--workers".into(), "2".into()]);
    let pod = launcher.pod(&node(), Some("wrangle-gpu-cookie"));
    assert_eq!(pod.metadata.name.as_deref(), Some("wrangle-gpu-0000abcd"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("ml"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels.get(GROUP_LABEL).map(String::as_str), Some("gpu"));
    assert_eq!(
        labels.get(NODE_LABEL).map(String::as_str),
        Some("gpu-0000abcd")
    );
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.service_account_name, None);
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some("wrangle-node:1"));
    assert_eq!(container.args.clone().unwrap(), ["--workers", "2"]);
    assert_eq!(container.command, None, "the image's entrypoint runs");
    assert_eq!(container.resources, None);
    let env = env_of(&pod);
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("WRANGLE_JOIN").as_deref(), Some("10.0.0.1:7000"));
    assert_eq!(value("WRANGLE_NODE_NAME").as_deref(), Some("gpu-0000abcd"));
    assert_eq!(value("WRANGLE_LABELS").as_deref(), Some("gpu=a100"));
    assert_eq!(value("WRANGLE_GROUP").as_deref(), Some("gpu"));
    assert_eq!(value("RUST_LOG").as_deref(), Some("info"));
    let cookie: Vec<&EnvVar> = env.iter().filter(|e| e.name == COOKIE_ENV).collect();
    assert_eq!(cookie.len(), 1);
    assert_eq!(cookie[0].value, None);
    let key = cookie[0]
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("wrangle-gpu-cookie", COOKIE_KEY)
    );
    let text = serde_json::to_string(&pod).unwrap();
    assert!(!text.contains("s3cret-cookie"), "{text}");
}

#[test]
fn the_secret_holds_the_cookie_under_the_groups_label() {
    let launcher = KubernetesLauncher::new("ml", "img", Vec::new());
    let secret = launcher.secret("gpu", "s3cret-cookie");
    assert_eq!(secret.metadata.name.as_deref(), Some("wrangle-gpu-cookie"));
    assert_eq!(
        secret
            .metadata
            .labels
            .unwrap()
            .get(GROUP_LABEL)
            .map(String::as_str),
        Some("gpu")
    );
    let data = secret.data.unwrap();
    assert_eq!(data[COOKIE_KEY].0, b"s3cret-cookie");
}

#[test]
fn resources_and_service_account_go_into_the_spec() {
    let launcher = KubernetesLauncher::new("ml", "img", Vec::new())
        .requests("500m", "")
        .limits("2", "1Gi")
        .service_account("nodes");
    let spec = launcher.pod(&node(), None).spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("nodes"));
    assert_eq!(spec.automount_service_account_token, Some(true));
    let resources = spec.containers[0].resources.clone().unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(requests.keys().collect::<Vec<_>>(), ["cpu"]);
    assert_eq!(requests["cpu"], Quantity("500m".into()));
    let limits = resources.limits.unwrap();
    assert_eq!(limits["cpu"], Quantity("2".into()));
    assert_eq!(limits["memory"], Quantity("1Gi".into()));
    // Without a secret, no cookie variable at all (never its value).
    let env = spec.containers[0].env.clone().unwrap();
    assert!(env.iter().all(|e| e.name != COOKIE_ENV));
}

#[test]
fn names_are_valid_object_names_and_do_not_collide_by_case() {
    assert_eq!(
        dns_name("wrangle-", "gpu-1", "-cookie"),
        "wrangle-gpu-1-cookie"
    );
    let upper = dns_name("wrangle-", "GPU", "-cookie");
    let under = dns_name("wrangle-", "g_pu", "");
    assert!(
        upper.starts_with("wrangle-gpu-") && upper.ends_with("-cookie"),
        "{upper}"
    );
    assert_ne!(upper, dns_name("wrangle-", "gpu", "-cookie"));
    assert_ne!(upper, dns_name("wrangle-", "Gpu", "-cookie"));
    for name in [&upper, &under] {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
    assert_eq!(upper, dns_name("wrangle-", "GPU", "-cookie"), "stable");
}
