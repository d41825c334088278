//! One open RabbitMQ connection with its confirm-mode channel, shared by the publishing service and
//! the exchange check.

use std::collections::HashSet;

use lapin::{Channel, Connection};
use tokio::task::JoinHandle;

pub(super) struct Link {
    pub connection: Connection,
    pub channel: Channel,
    /// Reports the connection's blocked/unblocked notices to `SinkHealth`; ends with the link.
    pub watcher: JoinHandle<()>,
    /// Exchanges of the template found to exist on this connection.
    pub exchanges: HashSet<String>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}
