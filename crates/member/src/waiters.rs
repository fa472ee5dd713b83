//! Clients waiting for the outcome of their proposals, by request id.
//!
//! A member gives each proposal a request id, carries it in the entry (see
//! `envelope`), and registers a [`Waiter`] for it. When the member applies an entry that
//! it proposed, it completes the waiter of the id the entry carries with that entry's
//! outcome. The id, not the log index, is what matches an outcome to its client: the index
//! a proposal was given can be taken by another leader's entry, and a forwarded proposal
//! learns no index at all.
//!
//! A waiter deregisters itself when dropped (the outcome came, the request timed out, or
//! the client went away and its handler was dropped), so nothing stays behind; the map is
//! bounded by the requests in flight. The channel is tokio's oneshot, which needs no
//! runtime: the server awaits a [`Waiter`], the simulator polls it with
//! [`Waiter::try_outcome`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// Clients waiting for their proposals to be applied, by request id.
pub struct Waiters<T> {
    inner: Arc<Mutex<Registry<T>>>,
}

struct Registry<T> {
    waiting: HashMap<u64, oneshot::Sender<T>>,
    /// Planted bug `waiter-mixup` (simulator builds only): hand an outcome to another
    /// waiting request than the one it belongs to.
    #[cfg(concord_planted_bugs)]
    mixup: bool,
}

impl<T> Clone for Waiters<T> {
    fn clone(&self) -> Self {
        Waiters { inner: self.inner.clone() }
    }
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        let registry = Registry {
            waiting: HashMap::new(),
            #[cfg(concord_planted_bugs)]
            mixup: false,
        };
        Waiters { inner: Arc::new(Mutex::new(registry)) }
    }
}

/// One client's wait for the outcome of its proposal. Dropping it forgets the
/// registration.
pub struct Waiter<T> {
    waiters: Waiters<T>,
    request_id: u64,
    outcome: oneshot::Receiver<T>,
}

impl<T> Future for Waiter<T> {
    type Output = Result<T, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome).poll(cx)
    }
}

impl<T> std::fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("request_id", &self.request_id).finish()
    }
}

impl<T> std::fmt::Debug for Waiters<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters").field("waiting", &self.count()).finish()
    }
}

impl<T> Waiter<T> {
    /// The outcome, if it has come (for callers that poll rather than await).
    pub fn try_outcome(&mut self) -> Option<T> {
        self.outcome.try_recv().ok()
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        self.waiters.registry().waiting.remove(&self.request_id);
    }
}

impl<T> Waiters<T> {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry<T>> {
        // A panic while holding this lock leaves the map consistent (every operation is
        // one insert or remove), so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a wait for `request_id`'s outcome; it lasts as long as the returned
    /// [`Waiter`]. Request ids must be unique per member: a second registration of the
    /// same id replaces the first (whose waiter then never completes), and dropping the
    /// first waiter removes the second's registration.
    pub fn register(&self, request_id: u64) -> Waiter<T> {
        let (sender, outcome) = oneshot::channel();
        self.registry().waiting.insert(request_id, sender);
        Waiter { waiters: self.clone(), request_id, outcome }
    }

    /// How many clients wait.
    pub fn count(&self) -> usize {
        self.registry().waiting.len()
    }

    /// Hands `outcome` to the client waiting for `request_id`, if one still does.
    pub fn complete(&self, request_id: u64, outcome: T) {
        let mut registry = self.registry();
        #[cfg(concord_planted_bugs)]
        let request_id = if registry.mixup {
            registry.waiting.keys().copied().filter(|&other| other != request_id).min().unwrap_or(request_id)
        } else {
            request_id
        };
        if let Some(sender) = registry.waiting.remove(&request_id) {
            let _ = sender.send(outcome);
        }
    }

    /// Switches on the planted bug `waiter-mixup` (simulator builds only): each outcome
    /// goes to another waiting request, when there is one.
    #[cfg(concord_planted_bugs)]
    pub fn plant_mixup(&self) {
        self.registry().mixup = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_reaches_the_request_it_belongs_to_and_only_it() {
        let waiters: Waiters<&str> = Waiters::default();
        let mut first = waiters.register(1);
        let mut second = waiters.register(2);
        waiters.complete(2, "two");
        waiters.complete(3, "nobody waits for three");
        assert_eq!(first.try_outcome(), None);
        assert_eq!(second.try_outcome(), Some("two"));
        waiters.complete(1, "one");
        assert_eq!(first.try_outcome(), Some("one"));
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_behind() {
        let waiters: Waiters<u32> = Waiters::default();
        let kept = waiters.register(1);
        drop(waiters.register(2));
        assert_eq!(waiters.count(), 1);
        waiters.complete(1, 10);
        drop(kept);
        assert_eq!(waiters.count(), 0);
    }
}
