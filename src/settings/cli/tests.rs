//! The command lines: every setting is a flag with its variable, `--help` lists them, and
//! the layers override each other in order.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::error::Error;
use crate::settings::Settings;

/// Parses `flags`, then the variables `env` as the flags they belong to, with the real
/// environment switched off (so the test's own environment cannot leak in). Variables of
/// other programs (`HOME`) are ignored, as the programs ignore them; a `WRANGLE_*` one no
/// flag reads is an error, so a misspelt name fails the test rather than passing unread.
pub(crate) fn parse_env(
    flags: &[String],
    env: &[(String, String)],
) -> Result<CoordinatorArgs, Error> {
    let cmd = CoordinatorArgs::command();
    let mut argv: Vec<OsString> = vec!["coordinator".into()];
    argv.extend(flags.iter().map(OsString::from));
    for (var, value) in env {
        if !var.starts_with("WRANGLE_") && var != "DATABASE_URL" {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))
            .ok_or_else(|| Error::invalid("env", format!("no flag reads {var}")))?;
        let long = arg
            .get_long()
            .expect("every variable belongs to a long flag");
        argv.push(format!("--{long}={value}").into());
    }
    let matches = cmd
        .mut_args(|a| a.env(None::<&'static str>))
        .try_get_matches_from(argv)
        .map_err(|e| Error::invalid("args", e.to_string()))?;
    CoordinatorArgs::from_arg_matches(&matches).map_err(|e| Error::invalid("args", e.to_string()))
}

fn parse(flags: &[&str]) -> Result<CoordinatorArgs, Error> {
    parse_env(
        &flags.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        &[],
    )
}

#[test]
fn every_setting_is_a_flag_with_its_variable() {
    let cmd = CoordinatorArgs::command();
    cmd.clone().debug_assert();
    let shown = format!("{:#?}", Settings::default());
    // The top-level fields of `Settings`, as its `Debug` lists them (one per line, indented
    // by four spaces); `compute` and `node` are sections, `node_groups` a list of tables
    // (in the file only).
    let fields: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.strip_prefix("    ")?.split_once(": ").map(|(k, _)| k))
        .filter(|k| !k.starts_with(' '))
        .collect();
    assert!(fields.len() > 40, "{fields:?}");
    for field in fields {
        let long = match field {
            "compute" | "node" | "node_groups" => continue,
            other => other.replace('_', "-"),
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .unwrap_or_else(|| panic!("setting `{field}` has no flag --{long}"));
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no variable"));
        assert!(env.to_str().unwrap().starts_with("WRANGLE_"), "{env:?}");
    }
    for field in [
        "credentials_dir",
        "known_hosts",
        "health_interval_secs",
        "unhealthy_after",
        "breaker_failure_rate",
        "breaker_min_requests",
        "breaker_window_secs",
        "breaker_open_secs",
        "breaker_max_open_secs",
    ] {
        let long = format!("compute-{}", field.replace('_', "-"));
        assert!(
            cmd.get_arguments().any(|a| a.get_long() == Some(&long)),
            "--{long}"
        );
    }
    let node = NodeArgs::command();
    node.clone().debug_assert();
    let shown = format!("{:#?}", crate::settings::NodeSettings::default());
    for line in shown.lines().filter_map(|l| l.strip_prefix("    ")) {
        let long = line.split_once(": ").unwrap().0.replace('_', "-");
        assert!(
            node.get_arguments().any(|a| a.get_long() == Some(&long)),
            "node --{long}"
        );
    }
}

#[test]
fn help_lists_every_flag_its_variable_and_the_precedence() {
    let help = CoordinatorArgs::command().render_long_help().to_string();
    for arg in CoordinatorArgs::command().get_arguments() {
        if arg.is_hide_set() {
            continue;
        }
        let long = arg.get_long().unwrap();
        assert!(help.contains(&format!("--{long}")), "--{long} in\n{help}");
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(help.contains(&format!("[env: {env}")), "{env} in\n{help}");
        }
    }
    assert!(help.contains("DATABASE_URL is read when WRANGLE_DATABASE_URL"));
    assert!(help.contains("the defaults, the settings file"), "{help}");
    let node = NodeArgs::command().render_long_help().to_string();
    for flag in [
        "--join",
        "--cookie-file",
        "--labels",
        "--workers",
        "--slots",
        "--tls-ca",
    ] {
        assert!(node.contains(flag), "{flag} in\n{node}");
    }
}

#[test]
fn flags_override_the_file_and_lists_are_comma_separated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "max_workers = 6\nlabels = [\"gpu\"]\ndurability = \"buffered\"\nauto_scale = false\n",
    )
    .unwrap();
    let config = format!("--config={}", path.display());
    let s = parse(&[&config, "--labels", " a, b ,,c", "--auto-scale", "true"])
        .unwrap()
        .settings()
        .unwrap();
    assert_eq!(s.max_workers, 6, "the file's value stays");
    assert_eq!(s.labels, ["a", "b", "c"]);
    assert!(s.auto_scale, "the flag wins over the file");
    assert_eq!(s.durability, crate::store::Durability::Buffered);
    let s = parse(&[&config, "--labels="]).unwrap().settings().unwrap();
    assert!(
        s.labels.is_empty(),
        "an empty list empties it: {:?}",
        s.labels
    );
    let err = parse(&["--durability", "sometimes"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("committed") && err.contains("buffered"),
        "{err}"
    );
}

#[test]
fn the_public_flag_takes_an_optional_value() {
    let open = |flags: &[&str]| {
        parse(flags)
            .unwrap()
            .settings()
            .map(|s| s.dangerously_allow_public_without_token)
    };
    let public = "--bind=0.0.0.0:7700";
    assert!(open(&[public, "--dangerously-allow-public-without-token"]).unwrap());
    assert!(open(&["--dangerously-allow-public-without-token=false", public]).is_err());
    assert!(!open(&["--dangerously-allow-public-without-token=false"]).unwrap());
}

#[test]
fn secrets_are_redacted_and_bad_scoped_tokens_are_named_by_place() {
    let args = parse(&[
        "--token=t0ken-secret",
        "--tokens=read=r3ader-secret",
        "--cookie=c00kie-secret",
        "--database-url=postgres://app:pa55word@db/w",
    ])
    .unwrap();
    let shown = format!("{args:?}");
    for secret in ["t0ken-secret", "r3ader-secret", "c00kie-secret", "pa55word"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    let err = parse(&["--tokens=read=ok,reed=s3cret-value"])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entry 1") && !err.contains("s3cret-value"),
        "{err}"
    );
}

#[test]
fn a_secret_file_and_its_value_on_one_command_line_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookie");
    std::fs::write(&path, "from-file\n").unwrap();
    let file = format!("--cookie-file={}", path.display());
    let s = parse(&[&file]).unwrap().settings().unwrap();
    assert_eq!(s.cookie.as_deref(), Some("from-file"));
    let err = parse(&[&file, "--cookie=c"])
        .unwrap()
        .settings()
        .unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn the_node_reads_its_section_of_the_coordinators_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "cookie = \"c00kie\"\nmax_workers = 3\n\n[node]\njoin = \"10.0.0.5:7450\"\n\
         labels = [\"gpu=a100\"]\nworkers = 2\nslots = 8\n",
    )
    .unwrap();
    let config = format!("--config={}", path.display());
    let node = |flags: &[&str]| {
        let matches = NodeArgs::command()
            .mut_args(|a| a.env(None::<&'static str>))
            .try_get_matches_from(std::iter::once(&"node").chain(flags))
            .unwrap();
        NodeArgs::from_arg_matches(&matches).unwrap().node_config()
    };
    let c = node(&[&config, "--workers", "5"]).unwrap();
    assert_eq!(c.coordinator, "10.0.0.5:7450");
    assert_eq!(c.cookie, "c00kie");
    assert_eq!(c.labels, ["gpu=a100"]);
    assert_eq!((c.workers, c.worker.max_concurrent_tasks), (5, 8));
    assert!(!format!("{c:?}").contains("c00kie"));
    let err = node(&[]).unwrap_err().to_string();
    assert!(err.contains("--join"), "{err}");
    let err = node(&["--join", "h:1"]).unwrap_err().to_string();
    assert!(err.contains("cookie"), "{err}");
}

#[test]
fn the_node_takes_several_coordinator_addresses_and_names_join_for_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = |toml: &str, flags: &[&str]| {
        let path = dir.path().join("w.toml");
        std::fs::write(&path, format!("cookie = \"c00kie\"\n\n[node]\n{toml}")).unwrap();
        let config = format!("--config={}", path.display());
        let matches = NodeArgs::command()
            .mut_args(|a| a.env(None::<&'static str>))
            .try_get_matches_from(["node", config.as_str()].iter().chain(flags))
            .unwrap();
        NodeArgs::from_arg_matches(&matches).unwrap().node_config()
    };
    let list = |c: &crate::NodeConfig| c.coordinators().map(String::from).collect::<Vec<_>>();
    // The flag (and WRANGLE_JOIN, the same string): comma-separated, spaces trimmed.
    let c = node("", &["--join", "10.0.0.5:7450, 10.0.0.6:7450"]).unwrap();
    assert_eq!(c.coordinator, "10.0.0.5:7450");
    assert_eq!(list(&c), ["10.0.0.5:7450", "10.0.0.6:7450"]);
    // The file: an array, or a string with commas; the flag wins over it.
    let c = node("join = [\"a:1\", \"b:2\", \"c:3\"]\n", &[]).unwrap();
    assert_eq!(list(&c), ["a:1", "b:2", "c:3"]);
    let c = node("join = \"a:1,b:2\"\n", &[]).unwrap();
    assert_eq!(list(&c), ["a:1", "b:2"]);
    let c = node("join = [\"a:1\", \"b:2\"]\n", &["--join", "d:4"]).unwrap();
    assert_eq!(list(&c), ["d:4"]);
    // One address: as before, nothing more to try.
    let c = node("join = \"a:1\"\n", &[]).unwrap();
    assert!(c.also_join.is_empty());
    // A bad one, an empty one, one twice, too many: each an error naming `join`.
    for (flag, why) in [
        ("a:1,b", "`b` is not `host:port`"),
        ("a:1,b:99999", "`b:99999` is not `host:port`"),
        ("nope,a:1", "`nope` is not `host:port`"),
        ("a:1,,b:2", "an empty address"),
        ("a:1,b:2,a:1", "`a:1` is listed twice"),
    ] {
        let err = node("", &["--join", flag]).unwrap_err().to_string();
        assert!(
            err.contains("invalid join") && err.contains(why),
            "{flag}: {err}"
        );
    }
    let seventeen = (1..=17).map(|p| format!("h:{p}")).collect::<Vec<_>>();
    let err = node("", &["--join", &seventeen.join(",")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid join") && err.contains("at most 16"),
        "{err}"
    );
    assert!(node("", &["--join", &seventeen[..16].join(",")]).is_ok());
    let err = node("join = [\"a:1\", 7]\n", &[]).unwrap_err().to_string();
    assert!(err.contains("join"), "{err}");
}
