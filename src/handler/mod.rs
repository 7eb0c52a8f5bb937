//! Task handlers: the user code a worker runs for each task type.

mod context;
mod registry;

pub use context::TaskContext;
pub(crate) use context::{ProgressRoute, ProgressSink};
pub use registry::HandlerRegistry;
pub(crate) use registry::{CatchUnwindFuture, ErasedHandler, HandlerMap};

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a handler failed, and whether trying again could help.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskError {
    message: String,
    retryable: bool,
    /// The earliest the queue may retry (a server's `Retry-After`).
    #[serde(default)]
    retry_after: Option<std::time::Duration>,
}

impl TaskError {
    /// A failure worth retrying (a flaky network, a busy model server). Retried with backoff
    /// while the task's retry budget lasts.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure no retry can fix (bad input, a refused request). The task fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the queue may retry the task.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Asks the queue not to retry before `after` (a busy server's `Retry-After`); the
    /// retry waits for the longer of this and its backoff. At most one day counts.
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The earliest the queue may retry, when the handler said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable [`TaskError`], so handlers can use `?` freely; return
/// [`TaskError::permanent`] for failures that must not be retried.
impl<E: std::error::Error> From<E> for TaskError {
    fn from(e: E) -> Self {
        Self::retryable(e.to_string())
    }
}

/// The code that runs one type of task. `Input` is decoded from the task's JSON payload (a
/// payload that does not decode fails the task permanently, naming the offending field) and
/// `Output` is encoded as its result.
///
/// Handlers are shared by every worker of a pool and called concurrently; keep state behind
/// `Arc`/locks, or in an actor of your own that the handler calls (see the `custom_handler`
/// example).
///
/// ```
/// use wrangle::{TaskContext, TaskError, TaskHandler};
///
/// struct Double;
///
/// impl TaskHandler for Double {
///     type Input = i64;
///     type Output = i64;
///
///     async fn handle(&self, _ctx: TaskContext, x: i64) -> Result<i64, TaskError> {
///         x.checked_mul(2).ok_or_else(|| TaskError::permanent("overflow"))
///     }
/// }
/// ```
pub trait TaskHandler: Send + Sync + 'static {
    /// The task's input.
    type Input: DeserializeOwned + Send + 'static;
    /// The task's result.
    type Output: Serialize + Send + 'static;

    /// Runs one attempt. Watch `ctx.cancelled()` in long work; the future is dropped when the
    /// task is cancelled or times out.
    fn handle(
        &self,
        ctx: TaskContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// A handler made from an async closure: `handler_fn(|ctx, input: MyInput| async move { ... })`.
pub struct FnHandler<F, I, O> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<F, I, O> fmt::Debug for FnHandler<F, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Makes a [`TaskHandler`] from an async closure taking the context and the decoded input.
///
/// ```
/// use wrangle::{handler_fn, TaskError};
///
/// let add = handler_fn(|_ctx, (a, b): (i64, i64)| async move { Ok::<_, TaskError>(a + b) });
/// # let _ = add;
/// ```
pub fn handler_fn<F, I, O, Fut>(f: F) -> FnHandler<F, I, O>
where
    F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    FnHandler {
        f,
        _types: PhantomData,
    }
}

impl<F, I, O, Fut> TaskHandler for FnHandler<F, I, O>
where
    F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    type Input = I;
    type Output = O;

    fn handle(
        &self,
        ctx: TaskContext,
        input: I,
    ) -> impl Future<Output = Result<O, TaskError>> + Send {
        (self.f)(ctx, input)
    }
}
