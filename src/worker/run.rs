//! One attempt: the handler under its timeout and cancellation token, with panics caught.
//!
//! An attempt starts with one poll of its handler, made by whoever starts it (a worker's
//! delivery polls a whole batch that way, see `delivery.rs`). Most handlers finish there,
//! and then the attempt costs no timer and no wait on its cancellation token: only an
//! attempt still pending after that poll is put under its timeout and raced against its
//! token, from the time it started.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AttemptOutcome;
use crate::handler::{CatchUnwindFuture, ErasedHandler, TaskContext, TaskError};
use crate::task::Payload;

/// An attempt to start: the handler (none when the worker has no handler for the type),
/// its context and input, and how long it may run.
pub(crate) struct AttemptJob {
    pub(crate) handler: Option<Arc<dyn ErasedHandler>>,
    pub(crate) ctx: TaskContext,
    pub(crate) input: Payload,
    pub(crate) timeout: Option<Duration>,
}

/// An attempt after its first poll.
pub(crate) enum Begun {
    /// It ended on that poll (or before it: no handler, or already cancelled).
    Ended(AttemptOutcome),
    /// It is still running; [`Running::finish`] drives it to its end.
    Running(Running),
}

/// An attempt whose handler did not finish on its first poll.
pub(crate) struct Running {
    handler: CatchUnwindFuture<Result<Payload, TaskError>>,
    token: CancellationToken,
    /// When it times out, and after how long.
    deadline: Option<(Instant, Duration)>,
}

impl AttemptJob {
    /// Polls the handler once with `cx`, unless the attempt was cancelled before it started;
    /// `now` is the time it starts, which its timeout counts from.
    /// The caller may move a [`Begun::Running`] attempt elsewhere (to its own task) before
    /// polling it again: the handler's future is boxed, and its next poll registers the
    /// new task's waker.
    pub(crate) fn begin(self, cx: &mut Context<'_>, now: Instant) -> Begun {
        let Some(handler) = self.handler else {
            return Begun::Ended(AttemptOutcome::Failed(TaskError::permanent(format!(
                "no handler for task type `{}` on worker {}",
                self.ctx.task_type, self.ctx.worker
            ))));
        };
        let token = self.ctx.cancel.clone();
        if token.is_cancelled() {
            return Begun::Ended(AttemptOutcome::Cancelled);
        }
        // The timeout counts from here, first poll included, as `tokio::time::timeout`
        // around the whole attempt would.
        let deadline = self.timeout.map(|t| (now + t, t));
        let span = tracing::info_span!(
            "task",
            task_id = %self.ctx.task_id,
            task_type = %self.ctx.task_type,
            attempt = self.ctx.attempt,
            trace_id = %self.ctx.trace_id,
            worker = %self.ctx.worker,
        );
        // The span's OTel trace is the task's own (a client's `traceparent` included).
        #[cfg(feature = "otel")]
        crate::telemetry::set_task_parent(&span, self.ctx.trace_id, self.ctx.task_id);
        let mut guarded = CatchUnwindFuture::new(handler.call(self.ctx, self.input), span);
        match Pin::new(&mut guarded).poll(cx) {
            Poll::Ready(r) => {
                // Whatever the handler spawned with its token stops too.
                token.cancel();
                Begun::Ended(outcome(r))
            }
            Poll::Pending => Begun::Running(Running {
                handler: guarded,
                token,
                deadline,
            }),
        }
    }
}

impl Running {
    /// Runs the attempt to its end: the handler's result, its timeout or its cancellation.
    pub(crate) async fn finish(self) -> AttemptOutcome {
        let Self {
            handler,
            token,
            deadline,
        } = self;
        let bounded = async {
            match deadline {
                Some((at, t)) => tokio::time::timeout_at(at, handler).await.map_err(|_| t),
                None => Ok(handler.await),
            }
        };
        let ended = tokio::select! {
            biased;
            _ = token.cancelled() => AttemptOutcome::Cancelled,
            r = bounded => match r {
                Err(after) => AttemptOutcome::TimedOut(after),
                Ok(r) => outcome(r),
            },
        };
        // Whatever the handler spawned with its token stops too.
        token.cancel();
        ended
    }
}

/// Runs one attempt from start to end in the calling task.
pub(crate) async fn run_attempt(job: AttemptJob) -> AttemptOutcome {
    let mut job = Some(job);
    let begun = poll_fn(|cx| {
        let job = job.take().expect("polled once");
        Poll::Ready(job.begin(cx, Instant::now()))
    })
    .await;
    match begun {
        Begun::Ended(outcome) => outcome,
        Begun::Running(running) => running.finish().await,
    }
}

/// What a handler's guarded result means for the attempt.
fn outcome(r: Result<Result<Payload, TaskError>, String>) -> AttemptOutcome {
    match r {
        Err(panic) => {
            AttemptOutcome::Failed(TaskError::permanent(format!("handler panicked: {panic}")))
        }
        Ok(Ok(result)) => AttemptOutcome::Completed(result),
        Ok(Err(e)) => AttemptOutcome::Failed(e),
    }
}
