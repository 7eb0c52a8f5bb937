use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use super::{TaskContext, TaskError, TaskHandler};
use crate::task::Payload;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A handler with its input and output types erased to JSON payloads.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        ctx: TaskContext,
        input: Payload,
    ) -> BoxFuture<Result<Payload, TaskError>>;
}

struct Typed<H>(H);

impl<H: TaskHandler> ErasedHandler for Typed<H> {
    fn call(
        self: Arc<Self>,
        ctx: TaskContext,
        input: Payload,
    ) -> BoxFuture<Result<Payload, TaskError>> {
        Box::pin(async move {
            let input: H::Input = input
                .decode()
                .map_err(|e| TaskError::permanent(format!("invalid task input: {e}")))?;
            let output = self.0.handle(ctx, input).await?;
            Payload::encode(&output)
                .map_err(|e| TaskError::permanent(format!("result does not serialize: {e}")))
        })
    }
}

/// The handlers by task type, as one immutable snapshot that workers hold.
pub(crate) type HandlerMap = Arc<HashMap<Arc<str>, Arc<dyn ErasedHandler>>>;

/// The task handlers shared by a pool's workers. Registering a handler publishes a new
/// snapshot; workers pick it up and announce the new task type to the queue.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    map: Arc<RwLock<HandlerMap>>,
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.task_types()).finish()
    }
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `task_type`, replacing any earlier one.
    pub fn register<H: TaskHandler>(&self, task_type: impl Into<Arc<str>>, handler: H) {
        let mut guard = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::clone(&guard);
        next.insert(task_type.into(), Arc::new(Typed(handler)));
        *guard = Arc::new(next);
    }

    /// The task types with a handler, sorted.
    pub fn task_types(&self) -> Vec<Arc<str>> {
        let mut types: Vec<_> = self.snapshot().keys().cloned().collect();
        types.sort();
        types
    }

    /// True when `task_type` has a handler.
    pub fn contains(&self, task_type: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(task_type)
    }

    pub(crate) fn snapshot(&self) -> HandlerMap {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs a boxed future inside its span, turning a panic inside it into an error instead
/// of unwinding into the worker.
pub(crate) struct CatchUnwindFuture<T>(BoxFuture<T>, tracing::Span);

impl<T> CatchUnwindFuture<T> {
    /// `span` is entered for every poll (a disabled span costs nothing).
    pub(crate) fn new(fut: BoxFuture<T>, span: tracing::Span) -> Self {
        Self(fut, span)
    }
}

impl<T> Future for CatchUnwindFuture<T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.1.enter();
        let fut = this.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Poll::Ready(Err(msg))
            }
        }
    }
}
