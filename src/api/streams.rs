//! A cap on the long-lived responses (`/events`, `/tasks/{id}/wait`) one client holds open.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use futures_util::StreamExt;

use super::error::ApiError;
use super::rate_limit::client_key;
use super::ApiState;

/// Open streams by client (IPv4 address or IPv6 /64).
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max_per_client: usize,
    open: DashMap<IpAddr, usize>,
}

/// One open stream; dropping it (when the response body ends or is dropped) frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

impl StreamSlots {
    pub(crate) fn new(max_per_client: usize) -> Self {
        Self {
            max_per_client,
            open: DashMap::new(),
        }
    }

    /// A slot for `client`, or `None` when it already holds its maximum.
    pub(crate) fn open(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let mut count = self.open.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            client,
        })
    }

    /// Streams open for `client` now.
    #[cfg(test)]
    pub(crate) fn count(&self, client: IpAddr) -> usize {
        self.open.get(&client).map_or(0, |c| *c)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Remove the entry at zero, so clients that come and go leave nothing behind.
        self.slots.open.remove_if_mut(&self.client, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// Takes a stream slot for the request's client for as long as its response body lives;
/// 429 when the client already holds `max_streams_per_client`.
pub(crate) async fn one_slot(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let Some(slot) = state.streams.open(client_key(ip)) else {
        tracing::warn!(client = %ip, "stream refused: too many open from this client");
        return ApiError::TooManyStreams(state.config.max_streams_per_client).into_response();
    };
    let response = next.run(req).await;
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_client_and_freed_on_drop() {
        let slots = Arc::new(StreamSlots::new(2));
        let a = IpAddr::from([10, 0, 0, 1]);
        let first = slots.open(a).unwrap();
        let _second = slots.open(a).unwrap();
        assert!(slots.open(a).is_none());
        assert!(slots.open(IpAddr::from([10, 0, 0, 2])).is_some());
        drop(first);
        assert_eq!(slots.count(a), 1);
        assert!(slots.open(a).is_some());
    }
}
