//! What an SSH node is sent and how its output is taken apart: the command line built from
//! an argv, the line that stops an abandoned command, and the output collected within its
//! bounds.
//!
//! SSH runs a string through the remote user's login shell, which must be a POSIX shell.
//! Each argument is single-quoted, so nothing in it is expanded. The line first reports the
//! shell's pid on stderr: sshd starts every session in a new session and process group led
//! by that shell, so the pid names the group to stop if the command is abandoned. (The
//! SSH `signal` request would be simpler, but sshd ignores it for root logins, and closing
//! the channel leaves a command without a terminal running.) The report is taken out of
//! stderr before anything else sees it.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::compute::request::{ComputeError, StreamChunk};

/// Most of stdout, and of stderr, collected for the answer. Past it the command is stopped
/// and the request fails with a `Protocol` error, as an HTTP body over 16 MiB does: an
/// answer silently cut short would be worse than none. (A sink has had every byte up to
/// that point.)
pub(super) const MAX_OUTPUT: usize = 16 << 20;
/// What the command line writes on stderr first, followed by the shell's pid.
const MARKER: &[u8] = b"__wrangle_pgid=";
/// Stderr scanned for the marker before giving up (login scripts may print first).
const MARKER_SCAN: usize = 64 << 10;

/// The line sent to sshd: report the process group, then `exec` the program (so a signal
/// that kills it is the session's exit signal, and a missing program exits 127).
pub(super) fn command_line(argv: &[String]) -> String {
    format!(
        "echo {}$$ >&2; exec {}",
        String::from_utf8_lossy(MARKER),
        crate::util::shell_quote(argv)
    )
}

/// The line that stops process group `pgid`: `SIGTERM`, up to 3 s to finish, then
/// `SIGKILL`. (dash's `kill` takes no `--`; a negative pid after the signal works in both.)
pub(super) fn kill_line(pgid: u32) -> String {
    format!(
        "kill -TERM -{pgid} 2>/dev/null || exit 0; n=0; \
         while [ $n -lt 3 ] && kill -0 -{pgid} 2>/dev/null; do sleep 1; n=$((n+1)); done; \
         kill -KILL -{pgid} 2>/dev/null; exit 0"
    )
}

/// What has come back so far.
#[derive(Default)]
pub(super) struct Output {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    /// Chunks not yet taken by the sink, in arrival order. The channel is read as fast as
    /// it comes whatever the sink does, so a slow reader never stalls the other channels of
    /// the connection; the output bounds bound this queue too.
    pub(super) pending: VecDeque<StreamChunk>,
    /// `Some(code)` once the exit status came, `Some(None)` for an exit signal.
    pub(super) exit: Option<Option<i64>>,
    /// Stderr held while looking for the marker.
    scan: Vec<u8>,
    scanning: bool,
    /// The remote process group, once reported.
    pub(super) pgid: Option<u32>,
}

impl Output {
    pub(super) fn new() -> Self {
        Self {
            scanning: true,
            ..Self::default()
        }
    }

    /// Takes stdout (`stderr` false) or stderr as it arrives.
    pub(super) fn push(
        &mut self,
        stderr: bool,
        data: Bytes,
        streaming: bool,
    ) -> Result<(), ComputeError> {
        if stderr && self.scanning {
            return self.scan(data, streaming);
        }
        let (buf, name) = if stderr {
            (&mut self.stderr, "stderr")
        } else {
            (&mut self.stdout, "stdout")
        };
        if buf.len() + data.len() > MAX_OUTPUT {
            return Err(ComputeError::protocol(format!(
                "ssh: the command's {name} passed 16 MiB; it was stopped"
            )));
        }
        buf.extend_from_slice(&data);
        if streaming {
            self.pending.push_back(if stderr {
                StreamChunk::Stderr(data)
            } else {
                StreamChunk::Stdout(data)
            });
        }
        Ok(())
    }

    /// Looks for the marker line in stderr; what comes before it (a login script's words)
    /// and after it is stderr as usual.
    fn scan(&mut self, data: Bytes, streaming: bool) -> Result<(), ComputeError> {
        self.scan.extend_from_slice(&data);
        let mut start = 0;
        while let Some(end) = self.scan[start..].iter().position(|&b| b == b'\n') {
            let line = &self.scan[start..start + end];
            if let Some(pid) = line.strip_prefix(MARKER) {
                self.pgid = std::str::from_utf8(pid).ok().and_then(|p| p.parse().ok());
                let before = self.scan[..start].to_vec();
                let after = self.scan[start + end + 1..].to_vec();
                return self.stop_scanning([before, after], streaming);
            }
            start += end + 1;
        }
        if self.scan.len() > MARKER_SCAN {
            let held = std::mem::take(&mut self.scan);
            return self.stop_scanning([held, Vec::new()], streaming);
        }
        Ok(())
    }

    fn stop_scanning(&mut self, parts: [Vec<u8>; 2], streaming: bool) -> Result<(), ComputeError> {
        self.scanning = false;
        self.scan = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            self.push(true, Bytes::from(part), streaming)?;
        }
        Ok(())
    }

    /// The stream ended: stderr held while scanning is stderr after all.
    pub(super) fn finish(&mut self, streaming: bool) -> Result<(), ComputeError> {
        if self.scanning {
            let held = std::mem::take(&mut self.scan);
            self.stop_scanning([held, Vec::new()], streaming)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::request::ComputeErrorKind;
    use crate::util::shell_quote as quote;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn every_argument_is_single_quoted() {
        assert_eq!(quote(&strings(&["echo", "a b"])), "'echo' 'a b'");
        assert_eq!(
            quote(&strings(&["printf", "%s\\n", "it's"])),
            r"'printf' '%s\n' 'it'\''s'"
        );
        assert_eq!(quote(&strings(&["x", ""])), "'x' ''");
        assert_eq!(
            quote(&strings(&["x", "$(id); `id` \"q\" *"])),
            "'x' '$(id); `id` \"q\" *'"
        );
    }

    #[test]
    fn command_lines_give_back_the_argv_and_the_group_through_real_shells() {
        let argv = strings(&[
            "printf", "<%s>", "a b", "it's", "", "$HOME", "\\n", "'", "x\ny", "*",
        ]);
        let expected: String = argv[2..].iter().map(|a| format!("<{a}>")).collect();
        for shell in ["sh", "bash", "dash"] {
            let Ok(out) = std::process::Command::new(shell)
                .arg("-c")
                .arg(command_line(&argv))
                .output()
            else {
                continue; // not installed
            };
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{shell}");
            let mut o = Output::new();
            o.push(true, Bytes::from(out.stderr), false).unwrap();
            o.finish(false).unwrap();
            assert!(o.pgid.is_some_and(|p| p > 0), "{shell}");
            assert!(o.stderr.is_empty(), "{shell}");
        }
    }

    #[test]
    fn the_marker_is_found_across_chunks_after_login_noise() {
        let mut o = Output::new();
        for chunk in ["motd line\n__wrangle", "_pgid=42", "\nreal err", "or\n"] {
            o.push(true, Bytes::from(chunk), true).unwrap();
        }
        o.finish(true).unwrap();
        assert_eq!(o.pgid, Some(42));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "motd line\nreal error\n"
        );
        let streamed: Vec<u8> = o
            .pending
            .iter()
            .flat_map(|c| match c {
                StreamChunk::Stderr(b) => b.to_vec(),
                _ => panic!("stdout chunk"),
            })
            .collect();
        assert_eq!(streamed, o.stderr);
        // No marker at all: everything is stderr.
        let mut o = Output::new();
        o.push(true, Bytes::from_static(b"no marker"), false)
            .unwrap();
        o.finish(false).unwrap();
        assert_eq!((o.pgid, o.stderr.as_slice()), (None, &b"no marker"[..]));
    }

    #[test]
    fn output_past_the_bound_is_refused() {
        let mut o = Output::new();
        o.push(true, Bytes::from_static(b"__wrangle_pgid=7\n"), true)
            .unwrap();
        o.push(false, Bytes::from(vec![b'x'; MAX_OUTPUT]), true)
            .unwrap();
        o.push(true, Bytes::from_static(b"e"), true).unwrap();
        let e = o.push(false, Bytes::from_static(b"y"), true).unwrap_err();
        assert_eq!(e.kind, ComputeErrorKind::Protocol);
        assert!(e.message.contains("stdout"), "{}", e.message);
        assert_eq!(o.pending.len(), 2);
    }
}
