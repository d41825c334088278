//! Waiting for work: `LISTEN` on new events, and which of their notifications bring news the
//! last claim did not already read.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Session;
use super::claim::Snapshot;
use crate::outbox::{NOTIFY_CHANNEL, StoreError};
use crate::telemetry;

/// Why [`Session::wait_for_work`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Notified,
    Timeout,
    /// The session had stopped listening and listens again: look for events once more.
    Listening,
}

impl Session {
    /// Waits for a notification or `timeout`; an error means the connection is gone. A session
    /// that stopped listening listens again and returns at once: events committed while it did
    /// not listen raised no notification, so the caller claims once more before it waits (a
    /// transaction that commits after `LISTEN` notifies it; one that committed before is seen by
    /// that claim).
    pub async fn wait_for_work(&mut self, timeout: Duration) -> Result<Wake, StoreError> {
        if !self.is_listening() {
            self.set_listening(true).await?;
            return Ok(Wake::Listening);
        }
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self.wakeups_lost.swap(false, Ordering::Relaxed) {
                return Ok(Wake::Notified);
            }
            tokio::select! {
                message = self.wakeups.recv() => match message {
                    Some(txid) if self.brings_news(txid) => return Ok(Wake::Notified),
                    Some(_) => {}
                    None => return Err(StoreError::SessionEnded),
                },
                _ = tokio::time::sleep_until(until) => return Ok(Wake::Timeout),
            }
        }
    }

    /// Whether a notification may announce events the last claim did not read: it names no
    /// transaction, or one that claim's snapshot did not see committed.
    fn brings_news(&self, txid: Option<u64>) -> bool {
        let snapshot = self.claimed_snapshot();
        match (txid, snapshot.as_ref()) {
            (Some(txid), Some(snapshot)) => !snapshot.saw_committed(txid),
            _ => true,
        }
    }

    /// The last claim's snapshot (a panic elsewhere while it was held leaves a whole value).
    pub(super) fn claimed_snapshot(&self) -> MutexGuard<'_, Option<Snapshot>> {
        self.claimed_snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the session listens for new events' notifications.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Stops the notifications of new events while the relay claims on a steady stream: it
    /// claims again after each batch anyway, and each notification cost a wake-up of the relay
    /// and of its backend. [`Session::wait_for_work`] listens again.
    pub async fn stop_listening(&self) -> Result<(), StoreError> {
        self.set_listening(false).await
    }

    /// `LISTEN` or `UNLISTEN` on [`NOTIFY_CHANNEL`], timed as the query `listen` / `unlisten`.
    async fn set_listening(&self, on: bool) -> Result<(), StoreError> {
        let (statement, query, doing) = if on {
            ("LISTEN", "listen", "listening for new events again")
        } else {
            (
                "UNLISTEN",
                "unlisten",
                "pausing the notifications of new events",
            )
        };
        let started = Instant::now();
        self.client
            .batch_execute(&format!("{statement} {NOTIFY_CHANNEL}"))
            .await
            .map_err(|e| StoreError::new(doing, e))?;
        telemetry::observe_query(query, started);
        self.listening.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a notification that may announce new events (see [`Session::brings_news`])
    /// arrived since the last call; drains them all.
    pub fn take_wakeup(&mut self) -> bool {
        let mut news = self.wakeups_lost.swap(false, Ordering::Relaxed);
        while let Ok(txid) = self.wakeups.try_recv() {
            news |= self.brings_news(txid);
        }
        news
    }
}
