//! One command on one session channel, to its end: stdin written then closed, stdout and
//! stderr streamed as they arrive and collected, the exit status.
//!
//! A command whose future is dropped before it ended (the proxy's timeout, a caller gone)
//! is stopped: a second channel on the same connection sends its process group `SIGTERM`,
//! then `SIGKILL` if it lingers (see [`kill_line`]), and its channel is closed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::command::{command_line, kill_line, Output};
use super::dial::Connection;
use crate::compute::request::{
    ComputeError, ComputeErrorKind, ComputeResponse, StreamChunk, StreamSink,
};

/// How long stopping an abandoned command may take, and then closing its channel.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// A channel opened for one command, and what stopping it would need.
pub(super) struct Session {
    pub(super) conn: Arc<Connection>,
    pub(super) channel: Channel<Msg>,
    /// The channel slot, held until sshd has closed the channel.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// The one slot for stopping commands (a channel of its own).
    pub(super) stopper: Arc<Semaphore>,
}

/// Runs `argv` to its end.
pub(super) async fn run(
    session: Session,
    argv: &[String],
    stdin: Option<String>,
    sink: Option<StreamSink>,
) -> Result<ComputeResponse, ComputeError> {
    let (read, write) = session.channel.split();
    let mut live = Live {
        read: Some(read),
        write: Some(write),
        conn: session.conn,
        permit: session.permit,
        stopper: session.stopper,
        pgid: AtomicU32::new(0),
    };
    let (Some(read), Some(write)) = (live.read.as_mut(), live.write.as_ref()) else {
        unreachable!("both halves are set above");
    };
    write
        .exec(true, command_line(argv))
        .await
        .map_err(|e| lost(format!("cannot start the command: {e}")))?;
    let answer = drive(read, write, stdin, sink, &live.pgid).await?;
    live.ended();
    Ok(answer)
}

/// A channel whose command may still run: dropped before [`ended`](Live::ended), it stops
/// the command and closes the channel, in a task (a drop cannot wait).
struct Live {
    read: Option<ChannelReadHalf>,
    write: Option<ChannelWriteHalf<Msg>>,
    conn: Arc<Connection>,
    permit: Option<OwnedSemaphorePermit>,
    stopper: Arc<Semaphore>,
    /// The remote process group (0 until reported).
    pgid: AtomicU32,
}

impl Live {
    /// The command ended and sshd closed the channel: nothing to clean up.
    fn ended(&mut self) {
        self.read = None;
        self.write = None;
        self.permit = None;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let (Some(read), Some(write)) = (self.read.take(), self.write.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the connection goes down with it
        };
        let stop = Stop {
            read,
            write,
            conn: self.conn.clone(),
            permit: self.permit.take(),
            stopper: self.stopper.clone(),
            pgid: *self.pgid.get_mut(),
        };
        runtime.spawn(stop.run());
    }
}

/// Stopping an abandoned command.
struct Stop {
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    conn: Arc<Connection>,
    permit: Option<OwnedSemaphorePermit>,
    stopper: Arc<Semaphore>,
    pgid: u32,
}

impl Stop {
    async fn run(mut self) {
        if self.pgid != 0 {
            let killed = tokio::time::timeout(STOP_WAIT, self.kill()).await;
            if !matches!(killed, Ok(Ok(()))) {
                tracing::warn!(pgid = self.pgid, "ssh: an abandoned command may still run");
            }
        }
        // Without a reported group the command has not started: once the channel is
        // closed, the shell's report hits a closed pipe and it ends there.
        let _ = self.write.close().await;
        // The slot is free once sshd has closed its side too (MaxSessions counts it).
        let _ = tokio::time::timeout(STOP_WAIT, async {
            while let Some(msg) = self.read.wait().await {
                if matches!(msg, ChannelMsg::Close) {
                    break;
                }
            }
        })
        .await;
        drop(self.permit);
    }

    async fn kill(&self) -> Result<(), russh::Error> {
        let _slot = self.stopper.acquire().await;
        let mut channel = self.conn.channel_open_session().await?;
        channel.exec(false, kill_line(self.pgid)).await?;
        channel.eof().await?;
        while let Some(msg) = channel.wait().await {
            if matches!(msg, ChannelMsg::Close) {
                break;
            }
        }
        Ok(())
    }
}

fn lost(why: String) -> ComputeError {
    ComputeError::unavailable(format!("ssh: {why}"))
}

/// Feeds stdin, reads the channel to its close, and hands chunks to the sink on the way.
async fn drive(
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<Msg>,
    stdin: Option<String>,
    sink: Option<StreamSink>,
    pgid: &AtomicU32,
) -> Result<ComputeResponse, ComputeError> {
    let mut writer = write.make_writer();
    let feed = async move {
        if let Some(stdin) = stdin {
            writer.write_all(stdin.as_bytes()).await?;
        }
        writer.shutdown().await // EOF: a command reading stdin sees its end
    };
    tokio::pin!(feed);
    let mut fed = false;
    let mut out = Output::new();
    let mut closed = false;
    // The reader went away: it stops getting output; the answer still comes.
    let mut reader_gone = false;
    loop {
        let streaming = sink.is_some() && !reader_gone;
        let has_pending = !out.pending.is_empty();
        tokio::select! {
            msg = read.wait() => match msg {
                None => break,
                Some(ChannelMsg::Close) => {
                    closed = true;
                    break;
                }
                Some(ChannelMsg::Data { data }) => out.push(false, data, streaming)?,
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    out.push(true, data, streaming)?;
                    if let Some(group) = out.pgid {
                        pgid.store(group, Ordering::Relaxed);
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    out.exit = Some(Some(i64::from(exit_status)));
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    tracing::debug!(signal = ?signal_name, "ssh command ended by a signal");
                    out.exit = Some(None);
                }
                Some(ChannelMsg::Failure) => {
                    return Err(ComputeError::new(
                        ComputeErrorKind::Remote,
                        "ssh: the server refused to run the command",
                    ));
                }
                Some(_) => {}
            },
            // A command that ends without reading its stdin closes it: like EPIPE, no error.
            _ = &mut feed, if !fed => fed = true,
            permit = reserve(sink.as_ref()), if has_pending => match permit {
                Some(permit) => {
                    if let Some(chunk) = out.pending.pop_front() {
                        permit.send(chunk);
                    }
                }
                None => {
                    reader_gone = true;
                    out.pending.clear();
                }
            },
        }
    }
    if !closed && out.exit.is_none() {
        return Err(lost("the connection dropped while the command ran".into()));
    }
    out.finish(sink.is_some() && !reader_gone)?;
    if let Some(sink) = sink.as_ref().filter(|_| !reader_gone) {
        for chunk in out.pending.drain(..) {
            if sink.send(chunk).await.is_err() {
                break;
            }
        }
    }
    Ok(ComputeResponse::Command {
        exit_code: out.exit.flatten(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A slot in the sink, or `None` once its reader is gone.
async fn reserve(sink: Option<&StreamSink>) -> Option<tokio::sync::mpsc::Permit<'_, StreamChunk>> {
    match sink {
        Some(sink) => sink.reserve().await.ok(),
        None => std::future::pending().await,
    }
}
