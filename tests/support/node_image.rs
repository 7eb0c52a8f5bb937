//! A Docker image of wrangle's programs, made without a registry: `FROM scratch` with the
//! example programs this test run compiled (stripped of debug info) and the libraries
//! `ldd` lists for them. The test declares `support/programs.rs` as `programs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::programs;

/// Builds image `tag` in `dir` holding `/bin/PROGRAM` for each of `programs` (examples),
/// with `entrypoint` as its entrypoint when given.
pub(crate) fn build(tag: &str, dir: &Path, programs: &[&str], entrypoint: Option<&str>) {
    let root = dir.join("rootfs");
    for program in programs {
        let exe = programs::example_binary(program);
        let to = root.join("bin").join(program);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let stripped = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&exe)
            .arg(&to)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(&exe, &to).unwrap();
        }
        let ldd = Command::new("ldd").arg(&exe).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(lib) = path {
                let to = root.join(lib.strip_prefix("/").unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&lib, &to).unwrap();
            }
        }
    }
    for d in ["tmp", "journal", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    if let Some(program) = entrypoint {
        dockerfile += &format!("ENTRYPOINT [\"{program}\"]\n");
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    docker(&["build", "-q", "-t", tag, dir.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs the docker CLI: its trimmed output, or what it said on stderr.
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
