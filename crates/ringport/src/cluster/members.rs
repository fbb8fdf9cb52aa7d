//! Who is in the cluster, and which node owns (numbers) each stream.
//!
//! Every node announces itself on `{prefix}.nodes` every [`HEARTBEAT_MS`]; a node not heard
//! from for [`NODE_TTL_MS`] is gone. A stream's owner is the live node with the highest
//! rendezvous score `mix(hash(stream) ^ hash(node id))`: every node computes the same owner
//! from the same live set, and when a node leaves only the streams it owned move.
//!
//! Sans-IO: every call takes `now` (ms, the caller's monotonic clock).

use std::collections::HashMap;

use ringport_proto::StreamName;

/// How often a node announces itself.
pub(crate) const HEARTBEAT_MS: u64 = 1_000;
/// A node not heard from for this long is no longer live (three missed heartbeats).
pub(crate) const NODE_TTL_MS: u64 = 3 * HEARTBEAT_MS;

/// FNV-1a, 64 bit: the same on every node and every build (unlike `DefaultHasher`).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separates parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: spreads the combined hashes.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stream's hash (kind and name).
pub(crate) fn stream_hash(stream: &StreamName) -> u64 {
    let kind: &[u8] = if stream.is_user() { b"user" } else { b"room" };
    fnv(&[kind, stream.name().as_bytes()])
}

/// The live nodes as this node sees them.
#[derive(Debug)]
pub(crate) struct Members {
    /// This node (always live).
    me: String,
    me_hash: u64,
    /// Other nodes: id -> (hash of the id, last heard at).
    others: HashMap<String, (u64, u64)>,
    /// This node is leaving: it owns a stream only when no other node is live.
    leaving: bool,
}

impl Members {
    pub fn new(me: &str) -> Members {
        Members {
            me: me.to_owned(),
            me_hash: fnv(&[me.as_bytes()]),
            others: HashMap::new(),
            leaving: false,
        }
    }

    /// `id` announced itself at `now`; `true` when it is new (or back).
    pub fn heard(&mut self, id: &str, now: u64) -> bool {
        if id == self.me {
            return false;
        }
        match self.others.get_mut(id) {
            Some(e) => {
                e.1 = e.1.max(now);
                false
            }
            None => {
                self.others
                    .insert(id.to_owned(), (fnv(&[id.as_bytes()]), now));
                true
            }
        }
    }

    /// `id` said it is leaving (graceful shutdown); `true` when it was live.
    pub fn left(&mut self, id: &str) -> bool {
        self.others.remove(id).is_some()
    }

    /// This node leaves: every stream goes to the other live nodes.
    pub fn leaving(&mut self) {
        self.leaving = true;
    }

    /// Forgets nodes not heard from for [`NODE_TTL_MS`]; the ids forgotten.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) >= NODE_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.others.remove(id);
        }
        gone
    }

    /// Live nodes, this one included.
    pub fn live(&self, now: u64) -> usize {
        1 + self
            .others
            .values()
            .filter(|(_, at)| now.saturating_sub(*at) < NODE_TTL_MS)
            .count()
    }

    /// The other live nodes' ids, sorted.
    pub fn live_others(&self, now: u64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .others
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) < NODE_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The owner of `stream` among the live nodes: `None` when it is this node.
    pub fn owner(&self, stream: &StreamName, now: u64) -> Option<&str> {
        let s = stream_hash(stream);
        let mut best = (mix(s ^ self.me_hash), None);
        for (id, (h, at)) in &self.others {
            if now.saturating_sub(*at) >= NODE_TTL_MS {
                continue;
            }
            let score = mix(s ^ h);
            // Ties (practically never) go to the smaller id, the same on every node.
            let best_id = best.1.unwrap_or(self.me.as_str());
            let better = (self.leaving && best.1.is_none())
                || score > best.0
                || (score == best.0 && id.as_str() < best_id);
            if better {
                best = (score, Some(id.as_str()));
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(i: usize) -> StreamName {
        StreamName::Room(format!("r{i}"))
    }

    #[test]
    fn every_node_computes_the_same_owner() {
        let ids = ["a", "b", "c"];
        let views: Vec<Members> = ids
            .iter()
            .map(|me| {
                let mut m = Members::new(me);
                for id in ids {
                    m.heard(id, 10);
                }
                m
            })
            .collect();
        let mut owned = [0usize; 3];
        for i in 0..300 {
            let owner = |v: &Members| v.owner(&room(i), 20).unwrap_or(&v.me).to_owned();
            let o = owner(&views[0]);
            assert_eq!(owner(&views[1]), o);
            assert_eq!(owner(&views[2]), o);
            owned[ids.iter().position(|id| *id == o).unwrap()] += 1;
        }
        // Spread over the nodes (each gets a fair share of 300 streams).
        assert!(owned.iter().all(|n| *n > 50), "{owned:?}");
    }

    #[test]
    fn a_node_that_stops_announcing_loses_only_its_streams() {
        let mut m = Members::new("a");
        m.heard("b", 0);
        m.heard("c", 0);
        let before: Vec<Option<String>> = (0..200)
            .map(|i| m.owner(&room(i), 100).map(str::to_owned))
            .collect();
        assert_eq!(m.live(100), 3);
        // c stays alive, b goes silent.
        m.heard("c", NODE_TTL_MS);
        let now = NODE_TTL_MS + 1;
        assert_eq!(m.live(now), 2);
        for (i, was) in before.iter().enumerate() {
            let is = m.owner(&room(i), now).map(str::to_owned);
            match was.as_deref() {
                Some("b") => assert_ne!(is.as_deref(), Some("b")),
                _ => assert_eq!(&is, was, "stream {i} moved although its owner is live"),
            }
        }
        assert_eq!(m.expire(now), vec!["b".to_owned()]);
        assert_eq!(m.live(now), 2);
        // Leaving: every stream goes to c while c is live.
        m.leaving();
        assert!((0..50).all(|i| m.owner(&room(i), now) == Some("c")));
        assert!(m.left("c"));
        assert!((0..50).all(|i| m.owner(&room(i), now).is_none()));
    }
}
