//! A cloneable stop signal: triggered once, observed by every task at its next safe point.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    /// `true` once a stop was requested; a watch channel so late subscribers see it too.
    rx: watch::Receiver<bool>,
}

/// The sending half, kept by whoever decides to stop (signal handler, tests).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx: Arc::new(tx) }, Shutdown { rx })
    }

    /// A signal of its own that also stops when this one does; its trigger stops only it.
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, child) = Shutdown::new();
        let (parent, forward) = (self.clone(), trigger.clone());
        tokio::spawn(async move {
            parent.wait().await;
            forward.trigger();
        });
        (trigger, child)
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a stop was requested (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}
