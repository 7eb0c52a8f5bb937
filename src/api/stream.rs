//! The event stream: the runtime's lifecycle events as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiState, ShuttingDown};

/// Server-sent events, one per lifecycle event (`event:` is its kind, `data:` its JSON). A
/// client that falls behind gets a `lagged` event saying how many it missed. A stream ends
/// after `max_event_stream` (default 1 hour); a client holds at most
/// `max_streams_per_client` streams (default 16,384), 429 past it.
#[utoipa::path(get, path = "/events", tag = "events",
    responses((status = 200, content_type = "text/event-stream", description = "lifecycle events"),
              (status = 429, body = super::error::ErrorBody, description = "too many open streams from this client")))]
pub(crate) async fn events(
    State(state): State<ApiState>,
    shutdown: Option<Extension<ShuttingDown>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.coordinator.events().subscribe();
    let stream = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(event) => {
                let json = serde_json::to_value(&*event).unwrap_or_default();
                let kind = json
                    .get("event")
                    .and_then(|k| k.as_str())
                    .unwrap_or("event")
                    .to_string();
                SseEvent::default().event(kind).data(json.to_string())
            }
            Err(RecvError::Lagged(missed)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    // Served by `api::serve`, the stream ends when the server shuts down (a router used
    // on its own, in tests, has no such signal).
    // It also ends after `max_event_stream`; browsers' EventSource reconnects by itself.
    let token = shutdown.map(|Extension(s)| s.0).unwrap_or_default();
    let max = state.config.max_event_stream;
    let stream = stream.take_until(async move {
        tokio::select! {
            () = token.cancelled_owned() => {}
            () = tokio::time::sleep(max) => {}
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
