//! Websocket Subscriptions (R4's bind-with-id protocol, docs/subscriptions.md): a client
//! opens `GET [base]/websocket` (with its bearer token when authorization is on), sends
//! `bind <Subscription id>`, and gets `bound <id>` once its token may read that
//! Subscription — then `ping <id>` for every notification owed to it, and it fetches what
//! changed with its own token. The pings carry no data. Each node delivers to the sockets
//! bound on it: every 50 ms, for each bound Subscription, it takes the Subscription's
//! delivery lease, sends one ping per owed notification in order and marks them sent.

use super::ApiState;
use crate::auth::{Perm, Principal};
use crate::interaction::Context;
use crate::interaction::guard::Guard;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The path of the websocket endpoint under the FHIR base.
pub const PATH: &str = "/websocket";
/// Subscriptions one socket may bind.
const MAX_BINDS: usize = 32;

/// The sockets bound on this node, by Subscription id.
#[derive(Default)]
pub struct Hub {
    sockets: Mutex<HashMap<String, Vec<mpsc::Sender<String>>>>,
    /// This node's lease owner name.
    node: String,
}

impl Hub {
    fn bind(&self, id: &str, tx: mpsc::Sender<String>) {
        if let Ok(mut s) = self.sockets.lock() {
            s.entry(id.to_string()).or_default().push(tx);
        }
    }

    /// The bound Subscriptions, dropping closed sockets.
    fn bound(&self) -> Vec<(String, Vec<mpsc::Sender<String>>)> {
        let Ok(mut s) = self.sockets.lock() else {
            return Vec::new();
        };
        s.retain(|_, txs| {
            txs.retain(|t| !t.is_closed());
            !txs.is_empty()
        });
        s.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[derive(Clone)]
struct WsState {
    api: ApiState,
    hub: Arc<Hub>,
}

/// The websocket route (mounted under the FHIR prefix) and this node's delivery loop.
pub fn router(api: ApiState) -> Router {
    let hub = Arc::new(Hub {
        node: format!("ws-{}", uuid::Uuid::new_v4().simple()),
        ..Hub::default()
    });
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(deliver_loop(api.ctx.clone(), hub.clone()));
    }
    let prefix = api.prefix.to_string();
    Router::new()
        .route(&format!("{prefix}{PATH}"), get(upgrade))
        .with_state(WsState { api, hub })
}

async fn upgrade(
    State(state): State<WsState>,
    principal: Option<axum::Extension<Principal>>,
    ws: WebSocketUpgrade,
) -> Response {
    let principal = principal.map(|axum::Extension(p)| p);
    ws.max_message_size(4096)
        .on_upgrade(move |socket| session(state, principal, socket))
}

/// Whether `principal` may read Subscription `id` (an unknown one looks the same as a
/// hidden one).
async fn may_bind(ctx: &Context, principal: Option<Principal>, id: &str) -> bool {
    let Ok(id) = crate::fhir::types::Id::parse(id) else {
        return false;
    };
    let Ok(guard) = Guard::load(ctx.store.as_ref(), principal, "").await else {
        return false;
    };
    if guard.require(Perm::Read, "Subscription").is_err() {
        return false;
    }
    match ctx.store.read("Subscription", id.as_str()).await {
        Ok(Some(v)) if !v.deleted => {
            let c = Context {
                guard: guard.clone(),
                ..ctx.clone()
            };
            let is_websocket = v
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .and_then(|b| {
                    b.pointer("/channel/type")
                        .and_then(serde_json::Value::as_str)
                        .map(|t| t == "websocket")
                })
                .unwrap_or(false);
            is_websocket
                && guard
                    .check_stored(&c, Perm::Read, "Subscription", id.as_str())
                    .await
                    .is_ok()
        }
        _ => false,
    }
}

async fn session(state: WsState, principal: Option<Principal>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::channel::<String>(256);
    let mut binds = 0;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break };
                let Message::Text(text) = msg else {
                    if matches!(msg, Message::Close(_)) { break }
                    continue;
                };
                let text = text.as_str().trim();
                let Some(id) = text.strip_prefix("bind ").map(str::trim) else {
                    let _ = socket.send(Message::Text("error unknown command (bind <id>)".into())).await;
                    continue;
                };
                if binds >= MAX_BINDS || !may_bind(&state.api.ctx, principal.clone(), id).await {
                    let _ = socket
                        .send(Message::Text("error cannot bind this Subscription".into()))
                        .await;
                    continue;
                }
                binds += 1;
                state.hub.bind(id, tx.clone());
                crate::interaction::notify::websocket_bound(&state.api.ctx, id).await;
                if socket.send(Message::Text(format!("bound {id}").into())).await.is_err() {
                    break;
                }
            }
            out = rx.recv() => {
                let Some(text) = out else { break };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn deliver_loop(ctx: Context, hub: Arc<Hub>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (id, sockets) in hub.bound() {
            if crate::interaction::notify::ping_bound(&ctx, &hub.node, &id, &sockets)
                .await
                .is_err()
            {
                tracing::warn!("websocket delivery failed; retrying");
            }
        }
    }
}
