//! Live updates: `GET /app/events?watch=Type,Type` is a server-sent event stream that says
//! `changed` when a resource of a watched type that the session may read has changed (the
//! change feed, judged by the session's Guard in [`crate::interaction::live`]); the page's
//! script then reloads its content the ordinary way, so what shows is read, confined and
//! audited like any page load. A session has at most [`PER_USER`] streams and a node
//! [`PER_NODE`]; a stream ends when its token does.

use super::WebState;
use super::session::Session;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Streams one user may hold open at once (tabs), and a node in all.
pub const PER_USER: usize = 6;
pub const PER_NODE: usize = 512;

/// How often a stream looks at the change feed.
const TICK: Duration = Duration::from_millis(750);

/// The types a page may watch (what its pages show).
const WATCHABLE: &[&str] = &[
    "Appointment",
    "Slot",
    "Schedule",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Account",
    "Contract",
    "Invoice",
    "Observation",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "MedicationDispense",
    "AllergyIntolerance",
    "Immunization",
    "Communication",
    "Task",
    "Coverage",
    "Patient",
];

/// The node's open streams, per user, and the change feed's head as last read (shared by
/// every stream, so an idle feed costs the node one small query per tick, not one per stream).
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<String, usize>>,
    head: Mutex<Option<(std::time::Instant, i64)>>,
}

/// One open stream; closing it (drop) gives the place back.
struct Ticket {
    streams: Arc<Streams>,
    user: String,
}

impl Streams {
    /// The change feed's head, read at most once per tick for the whole node.
    async fn head(&self, ctx: &crate::interaction::Context) -> Option<i64> {
        if let Ok(cached) = self.head.lock()
            && let Some((at, head)) = *cached
            && at.elapsed() < TICK / 2
        {
            return Some(head);
        }
        let head = crate::interaction::live::position(ctx).await.ok()?;
        if let Ok(mut cached) = self.head.lock() {
            *cached = Some((std::time::Instant::now(), head));
        }
        Some(head)
    }

    fn take(self: &Arc<Self>, user: &str) -> Option<Ticket> {
        let mut open = self.open.lock().ok()?;
        let total: usize = open.values().sum();
        let mine = open.entry(user.to_string()).or_insert(0);
        if *mine >= PER_USER || total >= PER_NODE {
            return None;
        }
        *mine += 1;
        Some(Ticket {
            streams: self.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.open.lock()
            && let Some(n) = open.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Watch {
    watch: Option<String>,
}

struct Follow {
    state: WebState,
    session: Session,
    watch: Vec<&'static str>,
    position: i64,
    ticks: u32,
    _ticket: Ticket,
}

pub async fn events(
    State(state): State<WebState>,
    session: Session,
    Query(w): Query<Watch>,
) -> Response {
    let watch: Vec<&'static str> = w
        .watch
        .unwrap_or_default()
        .split(',')
        .filter_map(|t| WATCHABLE.iter().find(|x| **x == t.trim()).copied())
        .collect();
    if watch.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let Some(ticket) = state.live.take(&session.username) else {
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    };
    let Ok(position) = crate::interaction::live::position(&state.ctx).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let follow = Follow {
        state,
        session,
        watch,
        position,
        ticks: 0,
        _ticket: ticket,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            tokio::time::sleep(TICK).await;
            f.ticks += 1;
            // the session ends with its token (checked every ~30 s)
            if f.ticks % 40 == 0
                && f.state
                    .smart
                    .verify(f.session.token(), &f.session.base)
                    .await
                    .is_err()
            {
                return None;
            }
            // nothing new since this stream's position: no query of its own
            match f.state.live.head(&f.state.ctx).await {
                Some(head) if head > f.position => {}
                _ => continue,
            }
            let changes = match crate::interaction::live::changes(
                &f.state.ctx,
                &f.session.principal,
                &f.session.base,
                f.position,
                &f.watch,
            )
            .await
            {
                Ok(c) => c,
                Err(_) => continue,
            };
            f.position = changes.position;
            if !changes.types.is_empty() {
                let names: Vec<String> = changes.types.into_iter().collect();
                let event = Event::default().event("changed").data(names.join(","));
                return Some((Ok::<Event, std::convert::Infallible>(event), f));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
