//! Delivery bookkeeping for one connection's view of one stream epoch: which offsets arrived
//! (as disjoint ranges, so a contiguous stream costs one entry), how many arrived twice or
//! late, and which ranges the server declared lost (RESUME_RESULT GAP / EPOCH_CHANGED).
//!
//! The fan-out scenario reads loss, duplicates and reordering from it; the resume scenario
//! asks [`StreamLedger::verify`] whether every offset in a window arrived exactly once or was
//! reported as not recovered.

use std::collections::BTreeMap;

/// Disjoint half-open ranges `[start, end)` of u64, merged on insert.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end; no two ranges touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn contains(&self, v: u64) -> bool {
        // The common case (in-order arrivals): past the last range.
        if self
            .ranges
            .last_key_value()
            .is_some_and(|(_, &end)| v >= end)
        {
            return false;
        }
        self.ranges
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &end)| v < end)
    }

    /// Inserts `[start, end)`, merging with neighbours.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The common case (in-order arrivals): extends the last range.
        if let Some(mut last) = self.ranges.last_entry() {
            if *last.key() <= start && start <= *last.get() {
                let e = last.get_mut();
                *e = (*e).max(end);
                return;
            }
        }
        let (mut s, mut e) = (start, end);
        // Absorb a range that starts before `s` and reaches it.
        if let Some((&ps, &pe)) = self.ranges.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                self.ranges.remove(&ps);
            }
        }
        // Absorb every range starting inside [s, e].
        while let Some((&ns, &ne)) = self.ranges.range(s..=e).next() {
            e = e.max(ne);
            self.ranges.remove(&ns);
        }
        self.ranges.insert(s, e);
    }

    /// Adds `v` if it is the value right after the last range (the next offset of an
    /// in-order stream: one map lookup); returns whether it did.
    pub fn extend_last(&mut self, v: u64) -> bool {
        match self.ranges.last_entry() {
            Some(mut last) if *last.get() == v && v != u64::MAX => {
                *last.get_mut() = v + 1;
                true
            }
            _ => false,
        }
    }

    pub fn insert(&mut self, v: u64) {
        self.insert_range(v, v.saturating_add(1));
    }

    /// Number of values in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn min(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    /// Largest value in the set.
    pub fn max(&self) -> Option<u64> {
        self.ranges.values().next_back().map(|e| e - 1)
    }

    /// Number of values of `[start, end)` in the set.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        let first = self.ranges.range(..=start).next_back().map(|(&s, _)| s);
        let lo = first.unwrap_or(start);
        self.ranges
            .range(lo..end)
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// Ranges held, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

/// How one received offset compared with what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next offset, or a later one (a gap opened before it).
    InOrder,
    /// Below the highest offset seen and not seen before: it filled a hole.
    Late,
    /// Seen before.
    Duplicate,
}

/// One connection's record of one stream epoch.
#[derive(Debug, Default, Clone)]
pub struct StreamLedger {
    pub received: RangeSet,
    pub duplicates: u64,
    pub late: u64,
    /// Ranges the server reported as not recovered.
    pub reported_lost: RangeSet,
}

impl StreamLedger {
    pub fn record(&mut self, offset: u64) -> Arrival {
        // The common case: the offset after the highest received.
        if self.received.extend_last(offset) {
            return Arrival::InOrder;
        }
        if self.received.contains(offset) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        let late = self.received.max().is_some_and(|m| offset < m);
        self.received.insert(offset);
        if late {
            self.late += 1;
            Arrival::Late
        } else {
            Arrival::InOrder
        }
    }

    /// Offsets missing between the first and the highest received (holes).
    pub fn holes(&self) -> u64 {
        match (self.received.min(), self.received.max()) {
            (Some(lo), Some(hi)) => (hi - lo + 1) - self.received.len(),
            _ => 0,
        }
    }

    /// Checks `[from, to)`: every offset must have been received or reported lost.
    pub fn verify(&self, from: u64, to: u64) -> Verdict {
        let mut v = Verdict {
            duplicates: self.duplicates,
            ..Verdict::default()
        };
        for o in from..to {
            let got = self.received.contains(o);
            let lost = self.reported_lost.contains(o);
            match (got, lost) {
                (true, false) => v.delivered += 1,
                (false, true) => v.reported_missing += 1,
                // Reported lost but delivered anyway: delivered, and the report was wrong.
                (true, true) => {
                    v.delivered += 1;
                    v.reported_but_delivered += 1;
                }
                (false, false) => v.unreported_missing += 1,
            }
        }
        v
    }
}

/// Outcome of [`StreamLedger::verify`], summable over connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Offsets received (once; duplicates are counted separately).
    pub delivered: u64,
    pub duplicates: u64,
    /// Offsets not received, inside a range the server declared NOT_RECOVERED.
    pub reported_missing: u64,
    /// Offsets not received and never reported: silent loss.
    pub unreported_missing: u64,
    /// Offsets both delivered and reported lost (a wrong report).
    pub reported_but_delivered: u64,
}

impl Verdict {
    pub fn add(&mut self, o: &Verdict) {
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.reported_missing += o.reported_missing;
        self.unreported_missing += o.unreported_missing;
        self.reported_but_delivered += o.reported_but_delivered;
    }

    /// Exactly once, or reported as not recovered, for every offset.
    pub fn ok(&self) -> bool {
        self.duplicates == 0 && self.unreported_missing == 0 && self.reported_but_delivered == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_and_counts() {
        let mut r = RangeSet::default();
        for v in [5, 3, 4, 10, 12, 11, 1] {
            r.insert(v);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 2), (3, 6), (10, 13)]);
        assert_eq!(r.len(), 7);
        assert!(r.contains(4) && !r.contains(6) && !r.contains(2));
        r.insert_range(2, 11);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 13)]);
        assert_eq!(r.count_in(0, 5), 4);
        assert_eq!((r.min(), r.max()), (Some(1), Some(12)));
    }

    #[test]
    fn extend_last_takes_only_the_next_value() {
        let mut r = RangeSet::default();
        assert!(!r.extend_last(0), "nothing to extend");
        r.insert(5);
        assert!(r.extend_last(6));
        assert!(!r.extend_last(6), "already in");
        assert!(!r.extend_last(9), "past a gap");
        assert!(!r.extend_last(4), "below");
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(5, 7)]);
        let mut top = RangeSet::default();
        top.insert(u64::MAX - 1);
        assert!(!top.extend_last(u64::MAX), "no range end past u64::MAX");
    }

    #[test]
    fn ledger_classifies_arrivals() {
        let mut l = StreamLedger::default();
        assert_eq!(l.record(1), Arrival::InOrder);
        assert_eq!(l.record(2), Arrival::InOrder);
        assert_eq!(l.record(5), Arrival::InOrder);
        assert_eq!(l.holes(), 2);
        assert_eq!(l.record(3), Arrival::Late);
        assert_eq!(l.record(3), Arrival::Duplicate);
        assert_eq!((l.holes(), l.late, l.duplicates), (1, 1, 1));
    }

    #[test]
    fn verify_accepts_reported_gaps_and_flags_silent_loss() {
        let mut l = StreamLedger::default();
        (1..=10).for_each(|o| {
            l.record(o);
        });
        // Disconnected after 10; the server said 11..15 are gone, delivery resumed at 15.
        l.reported_lost.insert_range(11, 15);
        (15..=20).for_each(|o| {
            l.record(o);
        });
        let v = l.verify(1, 21);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.delivered, v.reported_missing), (16, 4));

        // Silent loss: 21 and 22 never came and were never reported.
        (23..=25).for_each(|o| {
            l.record(o);
        });
        let v = l.verify(1, 26);
        assert_eq!(v.unreported_missing, 2);
        assert!(!v.ok());

        // A duplicate breaks exactly-once.
        l.record(24);
        assert!(!l.verify(1, 21).ok());
    }
}
