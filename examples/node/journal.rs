//! `journal` tasks, served with `--journal PATH`: the tests count executions on nodes by
//! this file and steer runs through other files.
//!
//! Each run appends `TASK_ID ATTEMPT NODE` (and ` TAG` when the payload has a `tag`) to
//! PATH, then, by its payload:
//! - `fail_unless_file`: fails for good (no retry) unless this file exists;
//! - `hold_file`: waits until this file exists;
//! - `ms`: sleeps this long.
//!
//! A run cancelled while it waits or sleeps appends `cancelled TASK_ID`. The output is
//! `{"node": NODE, "tag": TAG}`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wrangle::{handler_fn, HandlerRegistry, TaskContext, TaskError};

/// How often a held run looks for its file.
const POLL: Duration = Duration::from_millis(10);

/// The journal file, shared by every run.
#[derive(Clone)]
struct Journal(Arc<Mutex<File>>);

impl Journal {
    fn append(&self, line: &str) -> Result<(), TaskError> {
        writeln!(self.0.lock().unwrap_or_else(|e| e.into_inner()), "{line}")
            .map_err(|e| TaskError::retryable(format!("journal: {e}")))
    }
}

/// Notes a run's cancellation when it is dropped: a worker stops a cancelled attempt by
/// dropping its handler's future, so no code after an `.await` runs then. Disarmed when
/// the run ends by itself; a run dropped by its timeout finds its token not cancelled.
struct NoteCancel {
    journal: Journal,
    ctx: TaskContext,
    armed: bool,
}

impl Drop for NoteCancel {
    fn drop(&mut self) {
        if self.armed && self.ctx.is_cancelled() {
            let _ = self
                .journal
                .append(&format!("cancelled {}", self.ctx.task_id()));
        }
    }
}

/// Registers the `journal` task type, appending to `path`.
pub(crate) fn register(
    handlers: &HandlerRegistry,
    path: &Path,
    node: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--journal {}: {e}", path.display()))?;
    let journal = Journal(Arc::new(Mutex::new(file)));
    let node: Arc<str> = node.into();
    handlers.register(
        "journal",
        handler_fn(move |ctx: TaskContext, input: Value| {
            let (journal, node) = (journal.clone(), node.clone());
            async move {
                let tag = match input.get("tag") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                let line = format!("{} {} {node} {tag}", ctx.task_id(), ctx.attempt());
                journal.append(line.trim_end())?;
                let file = |key: &str| input.get(key).and_then(Value::as_str).map(PathBuf::from);
                if let Some(f) = file("fail_unless_file") {
                    if !f.exists() {
                        return Err(TaskError::permanent(format!("{} is missing", f.display())));
                    }
                }
                let mut note = NoteCancel {
                    journal,
                    ctx,
                    armed: true,
                };
                if let Some(f) = file("hold_file") {
                    while !f.exists() {
                        tokio::time::sleep(POLL).await;
                    }
                }
                let ms = input.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                note.armed = false;
                Ok(json!({ "node": &*node, "tag": tag }))
            }
        }),
    );
    Ok(())
}
