//! Overload (issue 10, item 7): a process-wide memory budget, modelled on Envoy's overload
//! manager. What is measured is what the gateway holds for clients: bytes queued to
//! connections and not yet sent (the engine's send pools), receive buffers of partial frames,
//! and history. Each shard publishes its own connection memory every loop turn (when it
//! changed; a padded slot per shard, so shards do not share a cache line); the sum with the
//! history bytes is taken fresh wherever it is needed. Above `server.memory_budget_bytes` the
//! gateway
//!
//! 1. stops accepting: new connections get CLOSE POLICY "server overloaded" (limit
//!    `memory_budget`), and
//! 2. sheds load where it is: every [`CHECK_EVERY_MS`] each shard closes its connections
//!    with the largest send queues first, until its share of the excess is freed — slow
//!    consumers go before anyone who reads. Each one's backlog is dropped at once and it is
//!    told why (CLOSE POLICY behind what the kernel already holds; `handler/overload.rs`);
//!    what it still holds while that drains is not counted again.
//!
//! History is not shed here: it has its own budget (`history.max_bytes`).

use std::sync::atomic::{AtomicU64, Ordering};

/// How often each shard measures (session clock ms).
pub const CHECK_EVERY_MS: u64 = 100;

/// One shard's published usage, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

/// The process-wide budget and the latest connection memory of every shard.
pub(crate) struct MemoryBudget {
    /// `server.memory_budget_bytes`, resolved.
    budget: u64,
    /// Per shard: send-queue plus receive-buffer bytes, as last published.
    usage: Box<[Slot]>,
}

impl MemoryBudget {
    pub fn new(budget: u64, shards: usize) -> MemoryBudget {
        MemoryBudget {
            budget,
            usage: (0..shards).map(|_| Slot::default()).collect(),
        }
    }

    /// Publishes `shard`'s connection memory.
    pub(super) fn publish(&self, shard: usize, bytes: u64) {
        if let Some(u) = self.usage.get(shard) {
            u.0.store(bytes, Ordering::Relaxed);
        }
    }

    /// Connection memory of the whole process.
    pub(super) fn connections(&self) -> u64 {
        self.usage.iter().map(|u| u.0.load(Ordering::Relaxed)).sum()
    }

    /// How far the process is over budget with `history` bytes added (0: within it).
    pub(super) fn excess(&self, history: u64) -> u64 {
        (self.connections() + history).saturating_sub(self.budget)
    }
}

/// Physical memory, or the cgroup (v2) memory limit if lower; `None` if neither is known.
pub fn physical_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_process_wide() {
        let b = MemoryBudget::new(1000, 2);
        b.publish(0, 600);
        assert_eq!(b.excess(0), 0);
        b.publish(1, 300);
        assert_eq!(b.excess(200), 100, "history counts too");
        b.publish(0, 100);
        assert_eq!((b.connections(), b.excess(200)), (400, 0));
    }

    #[test]
    fn physical_memory_is_known_here() {
        assert!(physical_memory().is_some_and(|m| m > 1 << 20));
    }
}
