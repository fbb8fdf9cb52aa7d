//! Handing a leaving node's streams over in the same epoch (SIGTERM, graceful shutdown).
//!
//! Every message a node numbers in the cluster gets a per-node sequence (header `Rp-Seq:
//! NODE_EPOCH SEQ`, counted whether or not it reached the broker). A node that leaves stops
//! numbering, hands its last numbered message to the broker, then announces `leaving ID
//! NODE_EPOCH LAST_SEQ [EPOCH...]`: the last sequence it used and every epoch it numbered
//! in (its own and those it had taken over). A node that received every sequence
//! `1..=LAST_SEQ` of that node — none lost on the way, none refused here, no disconnect of
//! its own meanwhile — has each of its replicas in those epochs up to the leaving node's
//! tail, so it continues them in the same epoch when it becomes their owner: clients that
//! move over resume with RESUMED. Otherwise its new streams start in its own epoch (resumes
//! are answered EPOCH_CHANGED: explicit, never a silent hole).
//!
//! Subscriptions are served by separate tasks, so the `leaving` announcement may be seen
//! before the last messages of the node: the decision then waits for them, at most
//! [`LEAVE_WAIT_MS`].
//!
//! Sans-IO: every call takes `now` (ms, the caller's monotonic clock).

use std::collections::HashMap;

/// How long a `leaving` announcement waits for the leaving node's last messages.
pub(crate) const LEAVE_WAIT_MS: u64 = 2_000;

/// The numbered messages received from one node incarnation (id, process epoch).
#[derive(Debug, Default)]
struct Tally {
    min: u64,
    max: u64,
    count: u64,
    /// One of its messages was lost here (refused, dropped, or this node was cut off).
    broken: bool,
}

impl Tally {
    /// Every sequence `1..=last` arrived, and nothing was lost.
    fn complete(&self, last: u64) -> bool {
        !self.broken && self.count == last && (last == 0 || (self.min == 1 && self.max == last))
    }
}

/// A `leaving` announcement whose node's last messages have not all arrived yet.
#[derive(Debug)]
struct Leave {
    last: u64,
    epochs: Vec<u32>,
    until: u64,
}

/// What to do with a leaving node's epochs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every one of its messages is here: continue its replicas in these epochs.
    Adopt(Vec<u32>),
    /// Some of its messages are still on their way.
    Wait,
    /// Something was lost: its streams start new epochs here.
    Refuse,
}

/// Per node incarnation: what arrived, and leaves waiting for their last messages.
#[derive(Debug, Default)]
pub(crate) struct Handovers {
    tallies: HashMap<(String, u32), Tally>,
    pending: HashMap<(String, u32), Leave>,
}

impl Handovers {
    /// Sequence `seq` of `node` (process epoch `node_epoch`) arrived and was kept here.
    /// `Some(epochs)`: it completed a waiting leave, adopt them.
    pub fn received(&mut self, node: &str, node_epoch: u32, seq: u64) -> Option<Vec<u32>> {
        let key = (node.to_owned(), node_epoch);
        let t = self.tallies.entry(key.clone()).or_default();
        t.min = if t.count == 0 { seq } else { t.min.min(seq) };
        t.max = t.max.max(seq);
        t.count += 1;
        let last = self.pending.get(&key)?.last;
        match self.decide(&key, last) {
            Decision::Adopt(_) | Decision::Refuse => {}
            Decision::Wait => return None,
        }
        let leave = self.pending.remove(&key)?;
        let done = self.tallies.remove(&key).is_some_and(|t| t.complete(last));
        done.then_some(leave.epochs)
    }

    /// A message of `node` was not kept here (refused, the shards too far behind).
    pub fn lost(&mut self, node: &str, node_epoch: u32) {
        self.tallies
            .entry((node.to_owned(), node_epoch))
            .or_default()
            .broken = true;
    }

    /// This node was cut off from the broker: it may have missed anything.
    pub fn lost_all(&mut self) {
        for t in self.tallies.values_mut() {
            t.broken = true;
        }
    }

    fn decide(&self, key: &(String, u32), last: u64) -> Decision {
        let t = self.tallies.get(key);
        match t {
            Some(t) if t.broken => Decision::Refuse,
            Some(t) if t.complete(last) => Decision::Adopt(Vec::new()),
            None if last == 0 => Decision::Adopt(Vec::new()),
            _ => Decision::Wait,
        }
    }

    /// `node` announced it left after numbering `last` messages in `epochs`.
    pub fn left(
        &mut self,
        node: &str,
        node_epoch: u32,
        last: u64,
        epochs: Vec<u32>,
        now: u64,
    ) -> Decision {
        let key = (node.to_owned(), node_epoch);
        match self.decide(&key, last) {
            Decision::Wait => {
                let until = now + LEAVE_WAIT_MS;
                self.pending.insert(
                    key,
                    Leave {
                        last,
                        epochs,
                        until,
                    },
                );
                Decision::Wait
            }
            Decision::Adopt(_) => {
                self.tallies.remove(&key);
                Decision::Adopt(epochs)
            }
            Decision::Refuse => {
                self.tallies.remove(&key);
                Decision::Refuse
            }
        }
    }

    /// Leaves that waited [`LEAVE_WAIT_MS`] in vain (refused): their node ids.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let late: Vec<(String, u32)> = self
            .pending
            .iter()
            .filter(|(_, l)| now >= l.until)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &late {
            self.pending.remove(key);
            self.tallies.remove(key);
        }
        late.into_iter().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_whose_every_message_arrived_is_adopted_even_out_of_order() {
        let mut h = Handovers::default();
        for seq in [2, 1, 3] {
            assert_eq!(h.received("a", 7, seq), None);
        }
        assert_eq!(
            h.left("a", 7, 3, vec![7, 9], 0),
            Decision::Adopt(vec![7, 9])
        );
        // The leave before its last message: waits, then adopts.
        for seq in [1, 2] {
            h.received("b", 8, seq);
        }
        assert_eq!(h.left("b", 8, 3, vec![8], 0), Decision::Wait);
        assert_eq!(h.received("b", 8, 3), Some(vec![8]));
        // A node that numbered nothing.
        assert_eq!(h.left("c", 5, 0, vec![5], 0), Decision::Adopt(vec![5]));
    }

    #[test]
    fn anything_lost_refuses_the_handover() {
        let mut h = Handovers::default();
        h.received("a", 7, 1);
        h.lost("a", 7);
        h.received("a", 7, 3);
        assert_eq!(h.left("a", 7, 3, vec![7], 0), Decision::Refuse);
        // Cut off meanwhile.
        h.received("b", 8, 1);
        h.lost_all();
        assert_eq!(h.left("b", 8, 1, vec![8], 0), Decision::Refuse);
        // Subscribed after its first messages (a hole that never fills): given up after
        // the wait.
        h.received("d", 3, 2);
        assert_eq!(h.left("d", 3, 2, vec![3], 0), Decision::Wait);
        assert!(h.expire(LEAVE_WAIT_MS - 1).is_empty());
        assert_eq!(h.expire(LEAVE_WAIT_MS), vec!["d".to_owned()]);
        assert_eq!(h.received("d", 3, 2), None);
        // Another incarnation of a node is counted apart.
        h.received("e", 1, 1);
        h.received("e", 2, 1);
        assert_eq!(h.left("e", 2, 1, vec![2], 0), Decision::Adopt(vec![2]));
    }
}
