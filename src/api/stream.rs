//! The event stream: the runtime's lifecycle events as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::Response;
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

/// The same events over a WebSocket, for browsers and clients that prefer one: each event
/// is a text message of its JSON (with its kind in `event`); a client that falls behind
/// gets `{"event": "lagged", "missed": N}`. Messages the client sends are ignored. The
/// socket closes after `max_event_stream`, or when the server shuts down. Browsers
/// authenticate with the dashboard's login cookie (a page cannot set the header), and a
/// page of another origin is refused like every other request.
#[utoipa::path(get, path = "/events/ws", tag = "events",
    responses((status = 101, description = "switching to a WebSocket of lifecycle events"),
              (status = 400, body = super::error::ErrorBody, description = "not a WebSocket handshake"),
              (status = 429, body = super::error::ErrorBody, description = "too many open streams from this client")))]
pub(crate) async fn events_ws(
    State(state): State<ApiState>,
    shutdown: Option<Extension<ShuttingDown>>,
    client: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, super::error::ApiError> {
    let upgrade = upgrade.map_err(|e| super::error::ApiError::bad("upgrade", e.body_text()))?;
    // The socket outlives this response: it holds the client's stream slot itself.
    let ip = client.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |Extension(c)| {
        c.0.ip()
    });
    let slot = state
        .streams
        .open(super::rate_limit::client_key(ip))
        .ok_or(super::error::ApiError::TooManyStreams(
            state.config.max_streams_per_client,
        ))?;
    let rx = state.coordinator.events().subscribe();
    let token = shutdown.map(|Extension(s)| s.0).unwrap_or_default();
    let max = state.config.max_event_stream;
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            send_events(socket, rx, token, max).await;
            drop(slot);
        }))
}

async fn send_events(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::Event>>,
    token: tokio_util::sync::CancellationToken,
    max: Duration,
) {
    let end = tokio::time::sleep(max);
    tokio::pin!(end);
    loop {
        let text = tokio::select! {
            () = &mut end => break,
            () = token.cancelled() => break,
            incoming = socket.recv() => match incoming {
                // The client closed, or the connection broke.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            },
            event = rx.recv() => match event {
                Ok(event) => serde_json::to_string(&*event).unwrap_or_default(),
                Err(RecvError::Lagged(missed)) => format!("{{\"event\":\"lagged\",\"missed\":{missed}}}"),
                Err(RecvError::Closed) => break,
            },
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
