//! A real OpenSSH server for one test: `/usr/sbin/sshd` on 127.0.0.1 and a free port, with
//! a temporary host key, a user key (in a credentials directory) authorized for the current
//! user, a known_hosts line for it, and a config of its own. Killed, with every session it
//! forked, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;

const SSHD: &str = "/usr/sbin/sshd";

/// A running (or stopped) sshd and the files around it.
pub(crate) struct Sshd {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) user: String,
    child: Option<Child>,
}

impl Sshd {
    /// Starts one, or says why not and returns `None` when sshd is not installed; under
    /// `CI=true` a missing sshd fails the test instead.
    pub(crate) fn start() -> Option<Self> {
        if !Path::new(SSHD).is_file() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but {SSHD} is missing: install openssh-server (.ci/run does)");
            }
            eprintln!(
                "\n!!!!!!!!\n!!! {SSHD} is missing: the SSH backend tests did NOT run \
                 (apt-get install openssh-server)\n!!!!!!!!\n"
            );
            return None;
        }
        // As root, sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("creds")).unwrap();
        keygen(&d.join("host_key"));
        keygen(&d.join("other_host_key"));
        keygen(&d.join("creds/id_ed25519"));
        keygen(&d.join("creds/stranger"));
        std::fs::copy(d.join("creds/id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_line = |key: &str| {
            let public = std::fs::read_to_string(d.join(format!("{key}.pub"))).unwrap();
            let mut fields = public.split_whitespace();
            let (kind, base64) = (fields.next().unwrap(), fields.next().unwrap());
            format!("# the test's sshd\n[127.0.0.1]:{port} {kind} {base64}\n")
        };
        std::fs::write(d.join("known_hosts"), host_line("host_key")).unwrap();
        std::fs::write(d.join("known_hosts_changed"), host_line("other_host_key")).unwrap();
        std::fs::write(d.join("known_hosts_empty"), "").unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n\
             UsePAM no\nLogLevel VERBOSE\n",
            dir = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let user = run("id", &["-un"]);
        let mut sshd = Self {
            dir,
            port,
            user,
            child: None,
        };
        sshd.resume();
        Some(sshd)
    }

    /// A path in its directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ssh://user@127.0.0.1:port`.
    pub(crate) fn endpoint(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// Starts sshd (again, on the same port and keys) and waits until it accepts.
    pub(crate) fn resume(&mut self) {
        assert!(self.child.is_none(), "sshd runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd does not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills sshd: the listener and the sshd process of every connection, as a crash of
    /// the machine's sshd would. The commands running in sessions are left alone (SIGKILL
    /// mid-way through the user's login scripts could leave their locks behind); with their
    /// pipes gone they end on their own.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Stopped first, so that it forks no connection between the list below and its
        // own kill: one accepted in that gap would outlive it and keep serving.
        signal("STOP", child.id());
        let mut pids: Vec<u32> = descendants(child.id())
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sshd")
            })
            .collect();
        pids.push(child.id());
        for pid in pids {
            signal("KILL", pid);
        }
        let _ = child.wait();
    }

    /// How many connections it serves now (each is a child process of the listener).
    pub(crate) fn connections(&self) -> usize {
        let pid = self.child.as_ref().expect("sshd runs").id();
        processes().filter(|&(_, ppid)| ppid == pid).count()
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- sshd's log ---\n{}", self.log());
        }
    }
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every (pid, parent pid) on the machine.
fn processes() -> impl Iterator<Item = (u32, u32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
}

/// Sends signal `name` (`KILL`, `STOP`) to process `pid`, whether it still runs or not.
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = processes().collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "wrangle-test",
            "-f",
            path.to_str().unwrap(),
        ],
    );
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
