//! `GET /api/v1/stream`: the live stream over WebSocket, as the original design's
//! EventWebSocket.
//!
//! Protocol (JSON text frames):
//! - server, on connect: `{"type":"welcome","client_id":N,"user":..,"role":..,"queue":N}`;
//! - client: `{"type":"subscribe","filters":{"event_types":["auth.", "setpoint.changed"],
//!   "min_severity":"warn","gateway_id":..,"station_id":..,"user_id":..}}` (every filter
//!   optional) -> `{"type":"subscribed","filters":{..}}`; nothing is sent before it;
//! - client: `{"type":"unsubscribe"}`, `{"type":"ping"}` -> `{"type":"pong"}`;
//! - server: `{"type":"event","event":{..}}` for each committed event that matches;
//! - server: `{"type":"missed","count":N}` when the client's queue overflowed;
//! - server: `{"type":"error","reason":..}` for a message it did not understand.
//!
//! Browsers cannot set headers on a WebSocket: the page offers its token as the subprotocol
//! `bearer.<token>` next to `linesentry.v1`, and the server answers `linesentry.v1`.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, Auth};
use crate::auth::{Principal, Role};
use crate::stream::{Filter, Subscription};

/// A client that does not take a frame within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub(super) async fn stream(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let principal = auth.require(Role::Viewer)?.clone();
    let sub = st
        .hub
        .subscribe()
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()))?;
    let queue = st.settings.stream.client_queue;
    let shutdown = st.shutdown.clone();
    Ok(ws
        .protocols(["linesentry.v1"])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| client(socket, sub, principal, queue, shutdown)))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        #[serde(default)]
        filters: Filter,
    },
    Unsubscribe,
    Ping,
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    send_text(socket, v.to_string().into()).await
}

async fn send_text(socket: &mut WebSocket, text: axum::extract::ws::Utf8Bytes) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await,
        Ok(Ok(()))
    )
}

/// Serves one client until it leaves, stalls past [`SEND_TIMEOUT`], or shutdown.
async fn client(
    mut socket: WebSocket,
    mut sub: Subscription,
    who: Principal,
    queue: usize,
    shutdown: CancellationToken,
) {
    let welcome = json!({
        "type": "welcome",
        "client_id": sub.id(),
        "user": who.name,
        "role": who.role.as_str(),
        "queue": queue,
        "message": "send {\"type\":\"subscribe\",\"filters\":{...}} to receive events",
    });
    if !send(&mut socket, &welcome).await {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        if !send(&mut socket, &json!({"type": "error", "reason": "binary frames are not understood; send JSON text"})).await {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                let reply = match serde_json::from_str::<ClientMessage>(text.as_str()) {
                    Ok(ClientMessage::Subscribe { filters }) => match filters.check() {
                        Ok(()) => {
                            let echo = serde_json::to_value(FilterView::from(&filters)).unwrap_or(Value::Null);
                            sub.set_filter(Some(filters));
                            json!({"type": "subscribed", "filters": echo})
                        }
                        Err(reason) => json!({"type": "error", "reason": reason}),
                    },
                    Ok(ClientMessage::Unsubscribe) => {
                        sub.set_filter(None);
                        json!({"type": "unsubscribed"})
                    }
                    Ok(ClientMessage::Ping) => json!({"type": "pong"}),
                    Err(e) => json!({"type": "error", "reason": format!("not understood: {e}")}),
                };
                if !send(&mut socket, &reply).await {
                    return;
                }
            }
            event = sub.rx.recv() => {
                let Some(text) = event else { return };
                let missed = sub.take_missed();
                if missed > 0 && !send(&mut socket, &json!({"type": "missed", "count": missed})).await {
                    return;
                }
                if !send_text(&mut socket, text.as_ref().into()).await {
                    return;
                }
            }
            _ = tick.tick() => {
                let missed = sub.take_missed();
                if missed > 0 && !send(&mut socket, &json!({"type": "missed", "count": missed})).await {
                    return;
                }
            }
        }
    }
}

/// The filters as confirmed to the client.
#[derive(serde::Serialize)]
struct FilterView<'a> {
    event_types: &'a [String],
    min_severity: Option<&'static str>,
    gateway_id: Option<&'a str>,
    station_id: Option<&'a str>,
    user_id: Option<&'a str>,
}

impl<'a> From<&'a Filter> for FilterView<'a> {
    fn from(f: &'a Filter) -> Self {
        Self {
            event_types: &f.event_types,
            min_severity: f.min_severity.map(linesentry_event::Severity::as_str),
            gateway_id: f.gateway_id.as_deref(),
            station_id: f.station_id.as_deref(),
            user_id: f.user_id.as_deref(),
        }
    }
}
