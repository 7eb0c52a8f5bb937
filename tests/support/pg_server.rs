//! A PostgreSQL server of the test's own on 127.0.0.1, for tests that stop and restart
//! the database itself (the shared server `.ci/run` starts must not be restarted under
//! other tests). Debian's server binaries (`/usr/lib/postgresql/*/bin`, the `postgresql`
//! package `.ci/run` installs); run as the `postgres` user when the test runs as root,
//! since `initdb` refuses root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private server: its data directory is removed, and the server stopped, on drop.
pub(crate) struct PgServer {
    bin: PathBuf,
    data: tempfile::TempDir,
    pub(crate) port: u16,
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl PgServer {
    /// Starts a fresh server on `port`, or `None` (with a note) when PostgreSQL's server
    /// programs are not installed; under `CI=true` that is a failure.
    pub(crate) fn start(port: u16) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but PostgreSQL's server programs are not installed"
            );
            eprintln!("no /usr/lib/postgresql/*/bin/initdb: test not run");
            return None;
        };
        let data = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(data.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the data directory to postgres");
        }
        let server = Self { bin, data, port };
        server.run(
            "initdb",
            &[
                "-D",
                &server.dir(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        server.up();
        Some(server)
    }

    fn dir(&self) -> String {
        self.data.path().join("pgdata").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (or restarts) the server, waiting until it takes connections.
    pub(crate) fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=100",
            self.port,
            self.data.path().display()
        );
        let log = self.data.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.dir(), "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    /// Stops the server at once (`-m fast`: open sessions are cut off).
    pub(crate) fn down(&self) {
        self.run("pg_ctl", &["-D", &self.dir(), "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .current_dir(Path::new("/"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let dir = self.dir();
        let args = ["-D", dir.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        };
    }
}
