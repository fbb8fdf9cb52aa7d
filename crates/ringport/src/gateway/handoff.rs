//! The hand-off from publishers to shards: one queue of shared deliveries per shard.
//!
//! A publisher (the HTTP API, a shard handling a client PUBLISH) appends one
//! `Arc<Delivery>` to every shard's [`DeliveryQueues`] entry while it holds the stream's
//! sequencing stripe, so each shard sees a stream's offsets in increasing order. A queue that
//! goes from empty to non-empty gets one drain task posted to its shard's inbox (one
//! allocation and at most one doorbell ring per batch, never per push); the task takes the
//! whole queue and delivers everything in it in the same loop turn, so pushes arriving
//! together leave together: one gathered send per connection per turn.
//!
//! The queues are bounded (`rooms.max_pending_deliveries` messages per shard): while a
//! shard is that far behind, [`DeliveryQueues::check_room`] refuses new pushes *before* they
//! are numbered, so a publisher faster than the shards gets a retryable refusal instead of
//! growing memory without bound.
//!
//! Pushes whose publisher waits for delivery (`?wait=delivered`) carry a [`Tally`]: every
//! shard adds its recipient count and the last one answers the publisher. A tally dropped
//! before every shard reported (a shard exited) answers nothing, and the publisher's
//! receiver sees the sender gone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ringport_io::EngineHandle;
use tokio::sync::oneshot;

use super::handler::GatewayHandler;
use super::publish::Delivery;

/// Per-shard queues of deliveries waiting for their shard's next drain.
#[derive(Debug)]
pub(crate) struct DeliveryQueues {
    /// Filled by publishers, taken whole by the shard's drain task.
    queues: Box<[Mutex<Vec<Arc<Delivery>>>]>,
    /// Messages queued per shard and not yet taken (read without the queue's lock).
    queued: Box<[AtomicUsize]>,
    /// `rooms.max_pending_deliveries`.
    max_pending: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation under these locks is a single push or swap: a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeliveryQueues {
    pub fn new(shards: usize, max_pending: usize) -> DeliveryQueues {
        DeliveryQueues {
            queues: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            queued: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            max_pending: max_pending.max(1),
        }
    }

    /// `Err(queued)` while some shard has `max_pending` messages or more waiting.
    pub fn check_room(&self) -> Result<(), usize> {
        match self.queued.iter().map(|q| q.load(Ordering::Acquire)).max() {
            Some(n) if n >= self.max_pending => Err(n),
            _ => Ok(()),
        }
    }

    /// The bound (for messages).
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Queues `d` on every shard; a queue that was empty gets a drain task posted.
    pub fn post(&self, handle: &EngineHandle<GatewayHandler>, d: &Arc<Delivery>) {
        for (shard, queue) in self.queues.iter().enumerate() {
            let mut q = lock(queue);
            let first = q.is_empty();
            q.push(Arc::clone(d));
            self.queued[shard].fetch_add(1, Ordering::AcqRel);
            drop(q);
            if first {
                handle.run(shard, |h: &mut GatewayHandler, ctx| h.drain_deliveries(ctx));
            }
        }
    }

    /// Takes shard `shard`'s whole queue into `out` (which must be empty).
    pub(super) fn take(&self, shard: usize, out: &mut Vec<Arc<Delivery>>) {
        if let Some(q) = self.queues.get(shard) {
            let mut q = lock(q);
            std::mem::swap(&mut *q, out);
            self.queued[shard].fetch_sub(out.len(), Ordering::AcqRel);
        }
    }
}

/// Recipient counts of one delivery, summed over shards, for a publisher that waits.
#[derive(Debug)]
pub(crate) struct Tally {
    recipients: AtomicU64,
    /// Shards still to report.
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<u64>>>,
}

impl Tally {
    /// A tally over `shards` shards and the receiver of its total.
    pub fn new(shards: usize) -> (Tally, oneshot::Receiver<u64>) {
        let (tx, rx) = oneshot::channel();
        let t = Tally {
            recipients: AtomicU64::new(0),
            remaining: AtomicUsize::new(shards),
            done: Mutex::new(Some(tx)),
        };
        (t, rx)
    }

    /// One shard's count; the last shard to report sends the total.
    pub fn report(&self, n: u64) {
        self.recipients.fetch_add(n, Ordering::AcqRel);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(tx) = lock(&self.done).take() {
                let _ = tx.send(self.recipients.load(Ordering::Acquire));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_report_sends_the_total() {
        let (t, mut rx) = Tally::new(3);
        t.report(2);
        t.report(0);
        assert!(rx.try_recv().is_err());
        t.report(5);
        assert_eq!(rx.try_recv().unwrap(), 7);
    }

    #[test]
    fn a_tally_dropped_early_closes_the_receiver() {
        let (t, mut rx) = Tally::new(2);
        t.report(1);
        drop(t);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
