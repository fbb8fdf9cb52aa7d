//! The shard inbox: how any thread reaches a shard.
//!
//! Messages go into a mutex-guarded vector that the shard swaps out whole, once per wake-up,
//! so a burst of N messages costs the shard one lock. The doorbell is an eventfd whose read
//! the shard's ring always has armed: a sender rings it only when the `notified` flag was
//! clear, so a busy shard is rung at most once per loop turn however many messages arrive;
//! inside a [`crate::DoorbellBatch`] the write itself waits for the batch's end.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::stats::ShardStats;
use crate::{CloseReason, ConnId, Ctx, Handler};

/// A closure run on a shard with its handler and context.
pub(crate) type Task<H> = Box<dyn for<'a> FnOnce(&mut H, &mut Ctx<'a, H>) + Send>;

pub(crate) enum Envelope<H: Handler> {
    Send(ConnId, Bytes),
    SendMany(Vec<ConnId>, Bytes),
    Close(ConnId, CloseReason),
    Run(Task<H>),
}

impl<H: Handler> crate::doorbell::Bell for ShardShared<H> {
    fn ring_now(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd, which lives as long as
        // `self` (an owed ring holds an `Arc` of it). EAGAIN (counter saturated) still leaves
        // the eventfd readable, which is all we need.
        unsafe {
            libc::write(self.doorbell.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// What a shard shares with other threads.
pub(crate) struct ShardShared<H: Handler> {
    /// Pending messages; `None` once the shard has exited (later messages are dropped).
    inbox: Mutex<Option<Vec<Envelope<H>>>>,
    /// Set by the first sender after the shard last drained; cleared by the shard before it
    /// drains, so no message can be left behind without a doorbell.
    notified: AtomicBool,
    doorbell: OwnedFd,
    pub stats: ShardStats,
    pub shutdown: AtomicBool,
}

impl<H: Handler> ShardShared<H> {
    pub fn new() -> std::io::Result<ShardShared<H>> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ShardShared {
            inbox: Mutex::new(Some(Vec::new())),
            notified: AtomicBool::new(false),
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            doorbell: unsafe { OwnedFd::from_raw_fd(fd) },
            stats: ShardStats::default(),
            shutdown: AtomicBool::new(false),
        })
    }

    pub fn doorbell_fd(&self) -> RawFd {
        self.doorbell.as_raw_fd()
    }

    /// Queues `env` for the shard and rings its doorbell; drops it if the shard has exited.
    pub fn post(self: &Arc<Self>, env: Envelope<H>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = inbox.as_mut() else {
            // Dropped outside the lock (a closure's captures may be arbitrary).
            drop(inbox);
            drop(env);
            return;
        };
        queue.push(env);
        drop(inbox);
        self.ring();
    }

    /// The shard is exiting: what is pending, and everything posted from now on, is dropped.
    pub fn close_inbox(&self) {
        let pending = self.inbox.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(pending);
    }

    /// Wakes the shard unless a wake-up is already pending (now, or at the end of this
    /// thread's open [`crate::DoorbellBatch`]).
    pub fn ring(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            crate::doorbell::ring(self);
        }
    }

    /// Whether a sender rang since the last drain (cheap check once per loop turn).
    pub fn has_mail(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Takes every pending message, leaving `spare`'s (empty) allocation in the inbox.
    pub fn drain(&self, spare: &mut Vec<Envelope<H>>) {
        self.notified.store(false, Ordering::Release);
        if let Some(queue) = self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            std::mem::swap(queue, spare);
        }
    }
}
