//! Hashed timing wheel: one per shard, O(1) to schedule, O(expired) to advance.
//!
//! Time is counted in ticks (`EngineConfig::timer_tick`). An entry is a connection key and
//! the tick it is due at; it sits in bucket `tick % slots`, so deadlines further away than one
//! revolution wait in their bucket for later rounds. Entries are never removed early: the
//! shard keeps, per connection, the tick of its one live entry and ignores any other entry
//! when it comes due (lazy deletion). Moving a deadline later costs nothing — the old entry
//! fires, the shard sees the deadline moved and schedules again — which makes per-message
//! work zero for idle timeouts and heartbeats.

/// One scheduled wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The connection key (generation | slot) the entry is for.
    pub key: u64,
    /// The tick the entry is due at.
    pub tick: u64,
}

#[derive(Debug)]
pub(crate) struct TimerWheel {
    /// `slots` buckets; entry for tick `t` lives in `buckets[t & mask]`.
    buckets: Vec<Vec<Entry>>,
    mask: u64,
    /// The last tick that was advanced over; scheduling at or before it is clamped after it.
    current: u64,
    /// Entries across all buckets, so the loop knows whether it must wake up for timers.
    len: usize,
}

impl TimerWheel {
    /// A wheel with `slots` buckets (rounded up to a power of two) starting at tick 0.
    pub fn new(slots: usize) -> TimerWheel {
        let slots = slots.next_power_of_two().max(2);
        TimerWheel {
            buckets: (0..slots).map(|_| Vec::new()).collect(),
            mask: slots as u64 - 1,
            current: 0,
            len: 0,
        }
    }

    /// Schedules `key` at `tick`; a tick not after the current one fires at the next advance.
    pub fn schedule(&mut self, key: u64, tick: u64) -> u64 {
        let tick = tick.max(self.current + 1);
        self.buckets[(tick & self.mask) as usize].push(Entry { key, tick });
        self.len += 1;
        tick
    }

    /// Number of scheduled entries (live and stale).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The last tick advanced over.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Moves every entry due at or before `now` into `due` (in no particular order).
    pub fn advance(&mut self, now: u64, due: &mut Vec<Entry>) {
        if now <= self.current {
            return;
        }
        let span = (now - self.current).min(self.mask + 1);
        for step in 1..=span {
            let bucket = &mut self.buckets[((self.current + step) & self.mask) as usize];
            let before = bucket.len();
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].tick <= now {
                    due.push(bucket.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            self.len -= before - bucket.len();
        }
        self.current = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(due: &[Entry]) -> Vec<u64> {
        let mut k: Vec<u64> = due.iter().map(|e| e.key).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn fires_at_exact_tick() {
        let mut w = TimerWheel::new(8);
        w.schedule(1, 3);
        w.schedule(2, 5);
        let mut due = Vec::new();
        w.advance(2, &mut due);
        assert!(due.is_empty());
        w.advance(3, &mut due);
        assert_eq!(keys(&due), vec![1]);
        due.clear();
        w.advance(5, &mut due);
        assert_eq!(keys(&due), vec![2]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn waits_extra_rounds_for_far_deadlines() {
        let mut w = TimerWheel::new(4);
        w.schedule(9, 10); // bucket 2, two rounds away
        let mut due = Vec::new();
        for t in 1..10 {
            w.advance(t, &mut due);
            assert!(due.is_empty(), "fired early at {t}");
        }
        w.advance(10, &mut due);
        assert_eq!(keys(&due), vec![9]);
    }

    #[test]
    fn big_jump_fires_everything_due() {
        let mut w = TimerWheel::new(4);
        for k in 0..20 {
            w.schedule(k, k + 1);
        }
        let mut due = Vec::new();
        w.advance(100, &mut due);
        assert_eq!(keys(&due), (0..20).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_ticks_are_clamped_to_next() {
        let mut w = TimerWheel::new(4);
        let mut due = Vec::new();
        w.advance(50, &mut due);
        assert_eq!(w.schedule(7, 3), 51);
        w.advance(51, &mut due);
        assert_eq!(keys(&due), vec![7]);
    }
}
