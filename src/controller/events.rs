//! Events through kube's [`Recorder`], with its memory bounded.
//!
//! kube's recorder keeps every Event it published for six minutes, to fold
//! repeats into a series; a burst of ten thousand transitions would keep ten
//! thousand Events in memory. Here a recorder is used for at most
//! [`SERIES_CACHE_LIMIT`] Events and then replaced by a fresh one: a repeat
//! after that starts a new series instead of counting in the old one.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// The most Events one recorder caches before it is replaced.
pub const SERIES_CACHE_LIMIT: usize = 1024;

/// Publishes Events; clones share one recorder.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// The recorder in use and how many Events it has published.
    current: Arc<Mutex<(Recorder, usize)>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            reporter,
            current: Arc::new(Mutex::new((recorder, 0))),
        }
    }

    pub async fn publish(
        &self,
        event: &Event,
        object: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.next_recorder().publish(event, object).await
    }

    /// The recorder for the next Event: a fresh one once the current one has
    /// published [`SERIES_CACHE_LIMIT`].
    fn next_recorder(&self) -> Recorder {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.1 >= SERIES_CACHE_LIMIT {
            *current = (Recorder::new(self.client.clone(), self.reporter.clone()), 0);
        }
        current.1 += 1;
        current.0.clone()
    }

    #[cfg(test)]
    fn published_by_current(&self) -> usize {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorder_is_replaced_after_its_limit() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let events = Events::new(
            Client::try_from(config).unwrap(),
            Reporter {
                controller: "kubepam".into(),
                instance: None,
            },
        );
        for _ in 0..SERIES_CACHE_LIMIT {
            events.next_recorder();
        }
        assert_eq!(events.published_by_current(), SERIES_CACHE_LIMIT);
        events.next_recorder();
        assert_eq!(events.published_by_current(), 1, "a fresh recorder");
    }
}
