//! One supervisor for everything a node runs: the HTTP listener, later listeners (MLLP) and
//! the job workers start under it and stop together. SIGTERM or SIGINT (or any service
//! ending with an error) flips one shutdown signal; every service drains — listeners stop
//! accepting and finish their requests, workers finish or give back their jobs — for up to
//! the drain timeout, after which what is left is aborted.

use anyhow::Context as _;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The services of a node and their shared shutdown signal.
pub struct Supervisor {
    shutdown: watch::Sender<bool>,
    services: JoinSet<(String, anyhow::Result<()>)>,
    drain: Duration,
    /// SIGTERM and SIGINT, caught from the moment the node starts (a signal that arrives
    /// while it is still starting is a clean stop too, never the default exit).
    signals: Signals,
}

impl Supervisor {
    pub fn new(drain: Duration) -> Supervisor {
        Supervisor {
            shutdown: watch::channel(false).0,
            services: JoinSet::new(),
            drain,
            signals: Signals::catch(),
        }
    }

    /// The shutdown signal services watch: it turns true once, when the node stops.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Binds a TCP listener; failing to is one error line naming the address.
    pub async fn bind(
        &self,
        what: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({what})"))
    }

    /// Runs `service` until it returns; it must return soon after the shutdown signal.
    pub fn spawn(
        &mut self,
        name: &str,
        service: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let name = name.to_string();
        self.services.spawn(async move { (name, service.await) });
    }

    /// Waits for SIGTERM/SIGINT or the first service to end, then stops every service within
    /// the drain timeout. The first service error, if any, is the result.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        tokio::select! {
            _ = self.signals.next() => tracing::info!("stopping: signal received"),
            ended = self.services.join_next() => {
                if let Some(r) = ended {
                    first_error = outcome(r);
                }
            }
        }
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.drain;
        while !self.services.is_empty() {
            match tokio::time::timeout_at(deadline, self.services.join_next()).await {
                Ok(Some(r)) => {
                    if let Some(e) = outcome(r) {
                        first_error.get_or_insert(e);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        left = self.services.len(),
                        "drain timeout: aborting what is still running"
                    );
                    self.services.abort_all();
                    break;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A finished service's error (logged), or None when it ended cleanly.
fn outcome(
    r: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match r {
        Ok((name, Ok(()))) => {
            tracing::info!(service = %name, "stopped");
            None
        }
        Ok((name, Err(e))) => {
            tracing::error!(service = %name, error = %format!("{e:#}"), "service failed");
            Some(e.context(format!("{name} failed")))
        }
        Err(e) => {
            tracing::error!(error = %e, "a service panicked");
            Some(anyhow::anyhow!("a service panicked"))
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C) handlers, installed when created.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn catch() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = recv(self.terminate.as_mut()) => {},
                _ = recv(self.interrupt.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The next delivery of `signal` (never, when it could not be caught).
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves when `shutdown` turns true (for `with_graceful_shutdown`).
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
