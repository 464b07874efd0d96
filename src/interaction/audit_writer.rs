//! Group commit of the AuditEvents that are not part of a write (reads, searches, operations
//! that change nothing, refusals, sign-ins). Every such request used to wait for a durable
//! transaction of its own, so a read cost one fsync behind the database's single writer.
//! Here concurrent requests hand their events to the node's writer, which stores everything
//! that is waiting in one transaction — one chain lock, one fsync — and answers each request
//! only after that transaction committed: every AuditEvent is still durable before its
//! response leaves, and a request whose events cannot be stored still fails.
//!
//! One writer task runs while there is work (it is started by the request that finds it idle
//! and ends when the queue is empty). A batch that fails is retried on contention; if it still
//! fails, each request's events are tried alone, so one request never takes others down.

use super::Context;
use super::registry::Registry;
use super::seal::Seal;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::store::Store;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Events of one batch, at most (a larger queue is taken in several transactions).
const MAX_BATCH_EVENTS: usize = 512;
/// Attempts of one transaction that meets contention.
const ATTEMPTS: usize = 5;

/// One request's events and where its answer goes.
struct Pending {
    events: Vec<Value>,
    done: oneshot::Sender<Result<(), Outcome>>,
}

#[derive(Default)]
struct State {
    queue: Vec<Pending>,
    running: bool,
}

/// A node's audit group commit. Cloned contexts share it.
#[derive(Default)]
pub struct AuditWriter {
    state: Mutex<State>,
    /// Events recorded since the indexer last ran from here.
    unsettled: AtomicU64,
    /// Whether an indexer run started here is going on.
    settling: Arc<AtomicBool>,
    /// Transactions committed and events recorded (for the metrics).
    commits: AtomicU64,
    events: AtomicU64,
}

/// Events recorded before the writer starts the indexer (it also runs before every read of
/// AuditEvents, and periodically).
const SETTLE_AFTER: u64 = 2000;

/// What the writer needs of the node (taken from the context of the request that starts it).
#[derive(Clone)]
struct Sink {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    seal: Option<Arc<Seal>>,
}

impl AuditWriter {
    pub fn new() -> Arc<AuditWriter> {
        Arc::new(AuditWriter::default())
    }

    /// Stores `events` and returns once the transaction holding them has committed.
    pub async fn submit(
        self: &Arc<Self>,
        ctx: &Context,
        events: Vec<Value>,
    ) -> Result<(), Outcome> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| Outcome::internal("The audit writer failed"))?;
            state.queue.push(Pending { events, done });
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let writer = self.clone();
            let sink = Sink {
                store: ctx.store.clone(),
                registry: ctx.registry.clone(),
                seal: ctx.seal.clone(),
            };
            tokio::spawn(async move { writer.run(sink).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Outcome::internal("The audit writer stopped")))
    }

    /// Transactions this writer committed and the events they held.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
        )
    }

    /// Counts a committed batch; starts the indexer when a backlog has built up.
    fn recorded(&self, events: usize, sink: &Sink) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        let n = self.unsettled.fetch_add(events as u64, Ordering::Relaxed) + events as u64;
        if n < SETTLE_AFTER || self.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        self.unsettled.store(0, Ordering::Relaxed);
        let sink = sink.clone();
        let settling = self.settling.clone();
        tokio::spawn(async move {
            let result = async {
                let registry = sink.registry.current(sink.store.as_ref()).await?.params;
                super::audit::settle(sink.store.as_ref(), &registry).await
            }
            .await;
            if let Err(o) = result {
                tracing::warn!(error = %o, "moving recorded AuditEvents failed; the next read of AuditEvents retries");
            }
            settling.store(false, Ordering::Release);
        });
    }

    /// Takes what is queued (up to a batch), or marks the writer idle when nothing is.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut state = self.state.lock().ok()?;
        if state.queue.is_empty() {
            state.running = false;
            return None;
        }
        let mut events = 0;
        let mut n = 0;
        for p in &state.queue {
            if n > 0 && events + p.events.len() > MAX_BATCH_EVENTS {
                break;
            }
            events += p.events.len();
            n += 1;
        }
        Some(state.queue.drain(..n).collect())
    }

    async fn run(self: Arc<Self>, sink: Sink) {
        // if this task ends abnormally, the queued requests are answered (with an error, as
        // their senders drop) and the next request starts a new writer
        let mut idle = Idle {
            writer: &self,
            emptied: false,
        };
        while let Some(batch) = idle.writer.take() {
            let events: Vec<&Value> = batch.iter().flat_map(|p| p.events.iter()).collect();
            let (requests, count) = (batch.len(), events.len());
            let started = std::time::Instant::now();
            let stored = store(&sink, &events).await;
            drop(events);
            tracing::debug!(
                requests,
                events = count,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "audit batch"
            );
            if stored.is_ok() {
                self.recorded(count, &sink);
            }
            match stored {
                Ok(()) => {
                    for p in batch {
                        let _ = p.done.send(Ok(()));
                    }
                }
                Err(o) if batch.len() == 1 => {
                    for p in batch {
                        let _ = p.done.send(Err(o.clone()));
                    }
                }
                Err(_) => {
                    for p in batch {
                        let events: Vec<&Value> = p.events.iter().collect();
                        let result = store(&sink, &events).await;
                        let _ = p.done.send(result);
                    }
                }
            }
        }
        // `take` found the queue empty and marked the writer idle
        idle.emptied = true;
    }
}

/// Marks the writer idle and drops what is queued when its task ends before emptying the
/// queue (a panic): the waiting requests get an error, and the next request starts a writer.
struct Idle<'a> {
    writer: &'a AuditWriter,
    emptied: bool,
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        if self.emptied {
            return;
        }
        if let Ok(mut state) = self.writer.state.lock() {
            state.running = false;
            state.queue.clear();
        }
    }
}

/// Stores `events` in one transaction, retried on contention.
async fn store(sink: &Sink, events: &[&Value]) -> Result<(), Outcome> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = sink.store.begin().await?;
            super::audit::append_many_in(tx.as_mut(), sink.seal.as_deref(), events).await?;
            tx.commit().await?;
            Ok::<(), Outcome>(())
        }
        .await;
        match result {
            Err(o) if o.kind == ErrorKind::Contention && attempt < ATTEMPTS => attempt += 1,
            r => return r,
        }
    }
}
