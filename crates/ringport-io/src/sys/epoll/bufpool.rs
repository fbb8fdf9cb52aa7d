//! The epoll backend's receive buffers: a small per-shard pool the driver `recv`s into when a
//! socket is readable, lent to the shard for one completion and returned right after. An
//! idle connection holds none. [`PREALLOCATED`] buffers exist from the start (so ordinary
//! traffic allocates nothing); more are allocated only when more are lent out at once, up
//! to the pool's size. The most recently returned one is reused first (it is still in cache).

use crate::sys::RecvBuf;

/// Buffers allocated up front (fewer if the pool is smaller).
pub(crate) const PREALLOCATED: usize = 64;

pub(crate) struct BufPool {
    /// Allocated buffers, indexed by [`RecvBuf`].
    bufs: Vec<Box<[u8]>>,
    /// Buffers not lent out (a stack: last returned, first reused).
    free: Vec<u32>,
    /// At most this many buffers exist.
    max: usize,
    /// Bytes per buffer.
    size: usize,
}

impl BufPool {
    pub fn new(max: usize, size: usize) -> BufPool {
        let max = max.max(1);
        let first = PREALLOCATED.min(max);
        BufPool {
            bufs: (0..first)
                .map(|_| vec![0u8; size].into_boxed_slice())
                .collect(),
            // Reversed: buffer 0 is lent first.
            free: (0..first as u32).rev().collect(),
            max,
            size,
        }
    }

    /// A free buffer, or `None` when all `max` are lent out.
    pub fn take(&mut self) -> Option<RecvBuf> {
        if let Some(i) = self.free.pop() {
            return Some(RecvBuf(i));
        }
        if self.bufs.len() < self.max {
            self.bufs.push(vec![0u8; self.size].into_boxed_slice());
            return Some(RecvBuf((self.bufs.len() - 1) as u32));
        }
        None
    }

    /// Returns a lent buffer.
    pub fn put(&mut self, buf: RecvBuf) {
        debug_assert!((buf.0 as usize) < self.bufs.len());
        self.free.push(buf.0);
    }

    /// Where to receive into.
    pub fn slot(&mut self, buf: RecvBuf) -> &mut [u8] {
        &mut self.bufs[buf.0 as usize]
    }

    /// The first `len` bytes of a lent buffer.
    pub fn get(&self, buf: RecvBuf, len: usize) -> &[u8] {
        &self.bufs[buf.0 as usize][..len]
    }

    /// Buffers allocated so far.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.bufs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_up_to_max_and_reuses_the_last_returned() {
        let mut p = BufPool::new(PREALLOCATED + 2, 64);
        assert_eq!(p.allocated(), PREALLOCATED);
        let lent: Vec<_> = (0..PREALLOCATED).map(|_| p.take().unwrap()).collect();
        assert_eq!(
            p.allocated(),
            PREALLOCATED,
            "the first ones exist from the start"
        );
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert!(p.take().is_none(), "at most max buffers");
        p.put(a);
        p.put(b);
        assert_eq!(p.take(), Some(b));
        assert_eq!(p.allocated(), PREALLOCATED + 2);
        drop(lent);
    }
}
