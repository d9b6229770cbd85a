//! The API's HTTP server: the accept loop that `axum::serve` would be, with
//! the limits a box on a customer's LAN needs. `axum::serve` sets no header
//! timeout and no connection limit: 1,100 connections that send half a
//! request line and stall held 1,100 sockets (of the process's 1,024 fds,
//! shared with Baresip's link, ALSA and the agent's socket) and starved
//! `/api/health`.
//!
//! Promises: at most [`Limits::connections`] connections at once (one more is
//! accepted and closed at once, so the backlog never fills with stalls); a
//! request's headers arrive within [`Limits::header_timeout`] or the
//! connection closes (an idle keep-alive connection too); no connection lives
//! longer than [`Limits::lifetime`]; on shutdown, no new connections, and the
//! open ones finish their request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

/// How much of the box one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub header_timeout: Duration,
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 64 clients is far more than a box has (the CLI, a dashboard, a
        // technician); 5 s for a request's headers is generous on a LAN.
        Limits { connections: 64, header_timeout: Duration::from_secs(5), lifetime: Duration::from_secs(60) }
    }
}

/// How each connection is served: HTTP/1.1 with keep-alive, its headers
/// within the limit. (`crate::fuzz` serves its inputs with this too.)
pub fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    builder
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut refused_since_log = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: wait a little rather than spin.
                    warn!(%err, "HTTP API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            refused_since_log += 1;
            if refused_since_log == 1 || refused_since_log % 1000 == 0 {
                warn!(peer = %peer, refused = refused_since_log, limit = limits.connections, "HTTP API: too many connections; refusing");
            }
            continue;
        };
        refused_since_log = 0;
        let service = TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = connection_builder(&limits).serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let deadline = tokio::time::sleep(limits.lifetime);
            tokio::pin!(deadline);
            let mut graceful = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(err) = result {
                            debug!(%peer, %err, "HTTP API connection ended");
                        }
                        break;
                    }
                    () = &mut deadline => {
                        debug!(%peer, "HTTP API connection closed: open too long");
                        break;
                    }
                    changed = closing.changed(), if !graceful => {
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                        graceful = true;
                    }
                }
            }
        });
    }
    let _ = closing_tx.send(true);
    // Wait for the open connections to finish (each is bounded by `lifetime`).
    let _ = permits.acquire_many(limits.connections as u32).await;
}
