//! Batched doorbells: a thread that posts to shards in a burst rings each shard once, at the
//! end of the burst, instead of once per post.
//!
//! A post to a shard whose doorbell is not already pending rings it: one `eventfd` write and,
//! if the shard sleeps, one wake-up — a system call and a context switch per message when a
//! publisher posts one message at a time and the shard drains each before the next arrives
//! (on a one-core server the woken shard also preempts the publisher). Inside a
//! [`DoorbellBatch`], the ring is *owed* instead: the shard's `notified` flag is set at once
//! (so other senders know a ring is coming and do not write the eventfd themselves) and the
//! write happens when the outermost batch on this thread ends. A shard that is awake anyway
//! sees the flag at its next loop turn and drains without the eventfd.
//!
//! Batches must be short, because other threads' posts to the same shard wait for the owed
//! ring too: a shard's loop turn (the engine holds one around each turn, so a handler's posts
//! to other shards leave together) or one poll of a future ([`batched`]: one poll of an HTTP
//! connection serves every pipelined request it has already read). Nothing in a batch may
//! block. Dropping the guard — also while unwinding — rings everything owed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

/// Something that can be woken: a shard's doorbell.
pub(crate) trait Bell: Send + Sync {
    /// Writes the doorbell now (its `notified` flag is already set).
    fn ring_now(&self);
}

thread_local! {
    /// Open batches on this thread (nested batches ring at the outermost end).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Doorbells owed by this thread's open batch.
    static OWED: RefCell<Vec<Arc<dyn Bell>>> = const { RefCell::new(Vec::new()) };
}

/// While alive, doorbells this thread rings are held and rung once when the outermost batch
/// ends. Not `Send`: a batch belongs to the thread that opened it.
#[must_use = "the batch ends (and rings) when the guard is dropped"]
pub struct DoorbellBatch {
    _not_send: PhantomData<*const ()>,
}

impl DoorbellBatch {
    /// Opens a batch on this thread.
    pub fn begin() -> DoorbellBatch {
        DEPTH.with(|d| d.set(d.get() + 1));
        DoorbellBatch {
            _not_send: PhantomData,
        }
    }
}

impl Drop for DoorbellBatch {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let n = d.get().saturating_sub(1);
            d.set(n);
            n
        });
        if depth == 0 {
            // Taken out before ringing: ringing never posts, but keep the borrow short.
            let mut owed = OWED.with(|o| std::mem::take(&mut *o.borrow_mut()));
            for bell in owed.drain(..) {
                bell.ring_now();
            }
            OWED.with(|o| {
                let mut o = o.borrow_mut();
                if o.is_empty() {
                    *o = owed; // keep the allocation
                }
            });
        }
    }
}

/// Rings `bell` now, or owes the ring to this thread's open batch. The caller has just set
/// the bell's `notified` flag (it was clear).
pub(crate) fn ring(bell: &Arc<impl Bell + 'static>) {
    if DEPTH.with(Cell::get) == 0 {
        bell.ring_now();
    } else {
        let bell: Arc<dyn Bell> = bell.clone();
        OWED.with(|o| o.borrow_mut().push(bell));
    }
}

/// `fut` with every poll inside a [`DoorbellBatch`]: the posts one poll makes (for an HTTP
/// connection, every pipelined request it serves in that poll) ring each shard once.
pub async fn batched<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _batch = DoorbellBatch::begin();
        fut.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Bell for Count {
        fn ring_now(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn outside_a_batch_rings_at_once() {
        let b = Arc::new(Count::default());
        ring(&b);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_batch_rings_at_its_outermost_end() {
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        {
            let _outer = DoorbellBatch::begin();
            ring(&a);
            {
                let _inner = DoorbellBatch::begin();
                ring(&b);
            }
            assert_eq!(
                a.0.load(Ordering::SeqCst),
                0,
                "held until the outer batch ends"
            );
            assert_eq!(b.0.load(Ordering::SeqCst), 0);
        }
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unwinding_rings_what_is_owed() {
        let a = Arc::new(Count::default());
        let a2 = a.clone();
        let r = std::panic::catch_unwind(move || {
            let _batch = DoorbellBatch::begin();
            ring(&a2);
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        // The thread is usable afterwards: no batch left open.
        let b = Arc::new(Count::default());
        ring(&b);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_batched_future_rings_after_each_poll() {
        let a = Arc::new(Count::default());
        let a2 = a.clone();
        let mut polls = 0;
        let fut = batched(std::future::poll_fn(move |cx| {
            polls += 1;
            ring(&a2);
            ring(&a2); // the second post of the same poll: the caller's flag would stop it,
                       // here it shows both are rung at the end, never in the middle
            if polls < 2 {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        }));
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            2,
            "rung when the first poll returned"
        );
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(a.0.load(Ordering::SeqCst), 4);
    }
}
