//! A command's log as it is read: streamed to the sink as [`StreamChunk::Stdout`], kept
//! up to 16 MiB (the rest is streamed, not kept, and a warning logged). Kubernetes keeps
//! one log per container with standard error merged in, so all of it is `stdout`.

use futures_util::AsyncReadExt;

use crate::compute::request::{ComputeResponse, StreamChunk, StreamSink};

/// Most of a command's log kept in the answer; the rest is streamed, not kept.
const MAX_OUTPUT: usize = 16 << 20;

/// Reads a log stream to its end into `out`.
pub(super) async fn read_all(
    stream: impl futures_util::AsyncBufRead,
    out: &mut Output,
) -> std::io::Result<()> {
    let mut stream = std::pin::pin!(stream);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.push(&buf[..n]).await;
    }
}

/// A command's log as it is read: streamed to the sink, kept up to [`MAX_OUTPUT`].
pub(super) struct Output {
    kept: Vec<u8>,
    /// Bytes read so far (kept or not).
    seen: usize,
    sink: Option<StreamSink>,
    node_id: String,
    warned: bool,
}

impl Output {
    pub(super) fn new(sink: Option<StreamSink>, node_id: &str) -> Self {
        Self {
            kept: Vec::new(),
            seen: 0,
            sink,
            node_id: node_id.to_string(),
            warned: false,
        }
    }

    pub(super) async fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len();
        let room = MAX_OUTPUT - self.kept.len();
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room && !self.warned {
            self.warned = true;
            tracing::warn!(
                node = %self.node_id,
                "command log over 16 MiB: the rest is streamed but not kept"
            );
        }
        if let Some(sink) = &self.sink {
            // A reader that went away stops getting output; the answer still comes.
            let chunk = StreamChunk::Stdout(bytes::Bytes::copy_from_slice(bytes));
            if sink.send(chunk).await.is_err() {
                self.sink = None;
            }
        }
    }

    /// Takes what a whole log holds beyond what was already read.
    pub(super) async fn catch_up(&mut self, whole: &[u8]) {
        if whole.len() > self.seen {
            let rest = whole[self.seen..].to_vec();
            self.push(&rest).await;
        }
    }

    pub(super) fn answer(self, exit_code: i64) -> ComputeResponse {
        ComputeResponse::Command {
            exit_code: Some(exit_code),
            stdout: String::from_utf8_lossy(&self.kept).into_owned(),
            // Kubernetes merges standard error into the container's log.
            stderr: String::new(),
        }
    }
}
