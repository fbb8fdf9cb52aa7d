//! A counting global allocator for the heap-per-connection tests (`memory_per_conn.rs`,
//! `memory_at_scale.rs`): every live heap byte of the test process, and live blocks per size
//! class. A test binary installs it with `#[global_allocator]`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

/// Size classes: exact to 8 bytes up to 4 KiB, then one class per power of two.
const SMALL: usize = 4096 / 8;
const CLASSES: usize = SMALL + 64;

pub struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];

fn class(size: usize) -> usize {
    if size <= 4096 {
        size.div_ceil(8).max(1) - 1
    } else {
        SMALL + (usize::BITS - (size - 1).leading_zeros()) as usize
    }
}

fn class_label(c: usize) -> String {
    if c < SMALL {
        format!("{}..={} B", c * 8 + 1, c * 8 + 8)
    } else {
        let hi = 1usize << (c - SMALL);
        format!("{}..={} B", hi / 2 + 1, hi)
    }
}

std::thread_local! {
    /// Set on a thread whose allocations are not counted: the in-process TLS clients of
    /// [`idle_tls_connection_heap`] (their rustls state is not the server's).
    pub static UNCOUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One measurement at a time: both tests read the same process-wide count.
pub static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count(size: usize, sign: i64) {
    if UNCOUNTED.try_with(|u| u.get()).unwrap_or(false) {
        return;
    }
    LIVE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    LIVE_BLOCKS[class(size)].fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: defers every operation to the system allocator unchanged; the counters are atomics
// that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(l.size(), -1);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(l.size(), -1);
            count(new, 1);
        }
        q
    }
}

/// Live heap: total bytes and blocks per size class.
pub struct Snapshot {
    pub bytes: i64,
    pub blocks: Vec<i64>,
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        blocks: LIVE_BLOCKS
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
    }
}

/// Prints what grew between two snapshots, per connection (`n` of them); returns bytes per
/// connection.
pub fn report_of(n: usize, step: &str, before: &Snapshot, after: &Snapshot) -> f64 {
    let per = (after.bytes - before.bytes) as f64 / n as f64;
    println!("{step}: {per:.1} heap bytes per connection");
    for c in 0..CLASSES {
        let grew = after.blocks[c] - before.blocks[c];
        if grew * 10 >= n as i64 || grew * 10 <= -(n as i64) {
            println!(
                "  {:>14}: {:+.2} blocks per connection",
                class_label(c),
                grew as f64 / n as f64
            );
        }
    }
    per
}
