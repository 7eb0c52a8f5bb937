//! One attempt: the handler under its timeout and cancellation token, with panics caught.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AttemptOutcome;
use crate::handler::{ErasedHandler, TaskContext, TaskError};
use crate::task::Payload;

pub(crate) async fn run_attempt(
    handler: Option<Arc<dyn ErasedHandler>>,
    ctx: TaskContext,
    input: Payload,
    timeout: Option<Duration>,
) -> AttemptOutcome {
    let Some(handler) = handler else {
        return AttemptOutcome::Failed(TaskError::permanent(format!(
            "no handler for task type `{}` on worker {}",
            ctx.task_type, ctx.worker
        )));
    };
    let token: CancellationToken = ctx.cancel.clone();
    let guarded = crate::handler::CatchUnwindFuture::new(handler.call(ctx, input));
    let bounded = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, guarded).await.map_err(|_| t),
            None => Ok(guarded.await),
        }
    };
    let outcome = tokio::select! {
        biased;
        _ = token.cancelled() => AttemptOutcome::Cancelled,
        r = bounded => match r {
            Err(after) => AttemptOutcome::TimedOut(after),
            Ok(Err(panic)) => AttemptOutcome::Failed(TaskError::permanent(format!(
                "handler panicked: {panic}"
            ))),
            Ok(Ok(Ok(result))) => AttemptOutcome::Completed(result),
            Ok(Ok(Err(e))) => AttemptOutcome::Failed(e),
        },
    };
    // Whatever the handler spawned with its token stops too.
    token.cancel();
    outcome
}
