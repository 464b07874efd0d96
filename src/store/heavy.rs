//! Admission for expensive reads (searches, counts, includes): at most half of a pool's
//! connections run them at once, so reads by id and writes always find a connection however
//! many costly searches arrive together; a search that cannot start within the statement
//! timeout is refused as unavailable. On PostgreSQL a search whose request is dropped (the
//! client went away) closes its connection, and the server, checking its clients
//! (`client_connection_check_interval`), cancels the statement.

use super::{StoreError, StoreResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

pub(super) struct Heavy {
    slots: Semaphore,
    /// The statement timeout: also how long a search waits for a slot.
    timeout: Duration,
}

impl Heavy {
    /// Admission for a pool of `connections`.
    pub(super) fn new(connections: u32, timeout_ms: u64) -> Heavy {
        let slots = usize::try_from((connections / 2).max(1)).unwrap_or(1);
        Heavy {
            slots: Semaphore::new(slots),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Waits for a slot, at most the statement timeout.
    pub(super) async fn enter(&self) -> StoreResult<SemaphorePermit<'_>> {
        match tokio::time::timeout(self.timeout(), self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(StoreError::Unavailable("the store is closing".into())),
            Err(_) => Err(StoreError::Unavailable(
                "every search slot stayed busy for the statement timeout".into(),
            )),
        }
    }
}

/// What a SQLite progress handler reads: the search is running (0), has finished and the
/// handler is inert (1), or was abandoned and must stop (2).
pub(super) const RUNNING: u8 = 0;
pub(super) const FINISHED: u8 = 1;
pub(super) const ABANDONED: u8 = 2;

/// A pooled connection that is closed, not returned to the pool, when it is dropped before
/// [`Closing::keep`]: a statement still running on it is then abandoned (PostgreSQL notices
/// the closed client; SQLite's progress handler reads `state`) instead of holding the
/// connection until it ends.
pub(super) struct Closing<DB: sqlx::Database> {
    conn: Option<sqlx::pool::PoolConnection<DB>>,
    state: Arc<AtomicU8>,
}

impl<DB: sqlx::Database> Closing<DB> {
    pub(super) fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Closing {
            conn: Some(conn),
            state: Arc::new(AtomicU8::new(RUNNING)),
        }
    }

    /// The flag a progress handler watches.
    pub(super) fn state(&self) -> Arc<AtomicU8> {
        self.state.clone()
    }

    pub(super) fn conn(&mut self) -> StoreResult<&mut DB::Connection> {
        match self.conn.as_mut() {
            Some(c) => Ok(&mut **c),
            None => Err(StoreError::Internal("connection already released".into())),
        }
    }

    /// The work finished: the connection goes back to the pool.
    pub(super) fn keep(mut self) {
        self.state.store(FINISHED, Ordering::Relaxed);
        self.conn.take();
    }
}

impl<DB: sqlx::Database> Drop for Closing<DB> {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            self.state.store(ABANDONED, Ordering::Relaxed);
            c.close_on_drop();
        }
    }
}
