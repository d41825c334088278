//! The task that drives the session's connection and hands its notifications to the session: new
//! events' wake-ups, lanes that changed hands, and the end of the connection itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Connection};

use super::super::{LANES_CHANNEL, NOTIFY_CHANNEL};

/// Notifications held between two looks at them: a few claims' worth at any rate.
const WAKEUPS_QUEUED: usize = 256;

/// The session's side of the connection task.
pub(super) struct Notifications {
    /// One message per notification: the notifying transaction's id when it names one (see
    /// `sql/migrations/0006_notify_txid.sql`); closed when the connection ends.
    pub wakeups: mpsc::Receiver<Option<u64>>,
    /// Set when a notification did not fit in `wakeups`: it counts as new.
    pub wakeups_lost: Arc<AtomicBool>,
    /// Set when another relay joined or gave up lanes ([`LANES_CHANNEL`]).
    pub lanes_changed: Arc<AtomicBool>,
    /// Closed when the connection ends: the leader lock is gone with it.
    pub connection: watch::Receiver<()>,
}

/// Drives `connection` on a task of its own until it ends, passing on its notifications.
pub(super) fn spawn<S, T>(mut connection: Connection<S, T>) -> Notifications
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Room for the notifications of a few claims; more than that count as new (see
    // `wakeups_lost`).
    let (tx, wakeups) = mpsc::channel(WAKEUPS_QUEUED);
    let wakeups_lost = Arc::new(AtomicBool::new(false));
    let lost = wakeups_lost.clone();
    let (alive, connection_rx) = watch::channel(());
    let lanes_changed = Arc::new(AtomicBool::new(false));
    let lanes_flag = lanes_changed.clone();
    tokio::spawn(async move {
        // Dropped when this task ends, which tells `Session::ended`.
        let _alive = alive;
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.channel() == LANES_CHANNEL {
                        lanes_flag.store(true, Ordering::Relaxed);
                    }
                    // Lanes' notifications and those without a transaction id always count as
                    // new.
                    let txid = (n.channel() == NOTIFY_CHANNEL)
                        .then(|| n.payload().parse().ok())
                        .flatten();
                    if tx.try_send(txid).is_err() {
                        lost.store(true, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::db::describe(&e), "PostgreSQL session lost");
                    break;
                }
                None => break,
            }
        }
        // Dropping `tx` tells the session that the connection is gone.
    });
    Notifications {
        wakeups,
        wakeups_lost,
        lanes_changed,
        connection: connection_rx,
    }
}
