//! Counted mailboxes. ractor exposes no mailbox length, so wrangle counts it: every send
//! through a [`Mailbox`] adds one to a shared gauge and the actor subtracts one as it starts
//! handling the message. The autoscaler and the stats read these gauges.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, Message, RpcReplyPort};

use crate::error::Error;

/// How many messages wait in one actor's mailbox.
#[derive(Clone, Debug, Default)]
pub struct MailboxDepth(Arc<AtomicI64>);

impl MailboxDepth {
    /// The number of messages sent but not yet being handled.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }

    /// Called by the actor as it starts handling one message.
    pub(crate) fn received(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    fn sent(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// An actor reference whose sends are counted in a [`MailboxDepth`].
pub(crate) struct Mailbox<M: Message> {
    actor: ActorRef<M>,
    depth: MailboxDepth,
}

impl<M: Message> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<M: Message> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("actor", &self.actor.get_id())
            .field("depth", &self.depth.get())
            .finish()
    }
}

impl<M: Message> Mailbox<M> {
    pub(crate) fn new(actor: ActorRef<M>, depth: MailboxDepth) -> Self {
        Self { actor, depth }
    }

    pub(crate) fn actor(&self) -> &ActorRef<M> {
        &self.actor
    }

    pub(crate) fn depth(&self) -> &MailboxDepth {
        &self.depth
    }

    /// Sends without waiting. When the actor is gone the message is handed back (`Some`),
    /// unless ractor itself dropped it (`None`).
    pub(crate) fn send(&self, msg: M) -> Result<(), Option<M>> {
        self.depth.sent();
        self.actor.send_message(msg).map_err(|e| {
            self.depth.received();
            match e {
                ractor::MessagingErr::SendErr(m) => Some(m),
                _ => None,
            }
        })
    }

    /// Sends `make()` after `delay`, unless the actor is gone by then.
    pub(crate) fn send_after(&self, delay: Duration, make: impl FnOnce() -> M + Send + 'static)
    where
        M: Send,
    {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.send(make());
        });
    }

    /// Sends a request and waits for the reply, up to `timeout` when given.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Option<Duration>,
        actor: &'static str,
    ) -> Result<R, Error> {
        let (tx, rx) = ractor::concurrency::oneshot();
        let port = match timeout {
            Some(t) => RpcReplyPort::from((tx, t)),
            None => RpcReplyPort::from(tx),
        };
        self.send(build(port))
            .map_err(|_| Error::Stopped { actor })?;
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| Error::Stopped { actor })?,
            None => rx.await,
        };
        reply.map_err(|_| Error::Stopped { actor })
    }
}
