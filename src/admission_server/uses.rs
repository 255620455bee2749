//! The uses the guard admits, queued for the controllers to record: every
//! use of a grant, and every object that confers access made during one.
//! Admission only queues them (never waits); the writer in
//! `controller::uses` records them on their ElevationRequests in batches.

use tokio::sync::mpsc;
use tracing::warn;

use kubepam_core::api::{Execution, LastingObject};

/// Uses waiting to be written before admission stops queueing more (they
/// are then only logged): the log must never slow down or block admission.
pub const QUEUE_LIMIT: usize = 10_000;
/// One admitted use, or an object that confers access made during the
/// grant, for the request it belongs to.
#[derive(Debug, Clone)]
pub struct Use {
    pub request: String,
    pub entry: Entry,
}

/// What is recorded on the request.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A use of the grant (`status.lastExecutions`).
    Execution(Execution),
    /// An object made during the grant (`status.lastingObjects`).
    Lasting(LastingObject),
}

/// The sending side, held by the admission server.
#[derive(Debug, Clone)]
pub struct UseLog {
    sender: mpsc::Sender<Use>,
}

impl UseLog {
    /// Queues a use; never waits.
    pub fn record(&self, use_: Use) {
        if let Err(error) = self.sender.try_send(use_) {
            warn!(%error, "execution log queue full; use recorded in this log line only");
        }
    }
}

/// The queue of admitted uses: admission sends, the writer receives.
pub fn channel() -> (UseLog, mpsc::Receiver<Use>) {
    let (sender, receiver) = mpsc::channel(QUEUE_LIMIT);
    (UseLog { sender }, receiver)
}
