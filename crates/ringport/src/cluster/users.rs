//! Per-user connection limits across the cluster (`limits.max_connections_per_user`).
//!
//! Each node counts its own connections per user (`gateway/admission.rs`, decided in the
//! shard's turn, never waiting for the broker) and tells the other nodes every change on
//! `{prefix}.conns`: the bridge publishes the *current* count of each user that changed
//! (read when it publishes, so changes from several shards cannot arrive out of order).
//! Every node keeps what the others told it ([`UserTable`]) and refuses a HELLO when its
//! own count plus the other nodes' reaches the cap, with the same CLOSE POLICY as a single
//! node.
//!
//! Message: a first line `NODE [full] [ask]`, then one `USER-TOKEN COUNT` line per user.
//! `full`: the lines are the node's whole table (its earlier entries are dropped first; a
//! large table spans several messages, the first marked `full`). `ask`: every receiver
//! sends its whole table back (a node that (re)connected to the broker knows nothing).
//! A node sends its whole table when another node joins, after it (re)connected, and when
//! more users changed than `cluster.max_pending` between two publishes.
//!
//! Limits of the design (docs/architecture.md, "Per-user connection limits"): two HELLOs of
//! one user on two nodes within the broker's delivery time can both be admitted (the cap is
//! exceeded by at most one per node in that window); while the broker is unreachable each
//! node checks its own counts only (counted, logged).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::Client;
use futures_util::StreamExt as _;

use super::{subject, ClusterBus};
use crate::gateway::Shared;

/// What the other nodes said about their connections per user, bounded: at most
/// `cluster.max_user_entries` (user, node) entries. A count beyond that is not kept (the
/// user's connections there are not added to its cap on this node: the cap is checked more
/// leniently, never a refused login), counted in `refused`.
#[derive(Debug)]
pub(crate) struct UserTable {
    /// user -> (interned node, connections there); a user is on few nodes.
    by_user: HashMap<String, Vec<(NodeIx, u32)>>,
    /// The node ids entries name, interned: index -> (id, its entries); `None` is a free
    /// slot (a node whose last entry went).
    nodes: Vec<Option<(String, usize)>>,
    /// id -> index into `nodes`.
    node_ix: HashMap<String, NodeIx>,
    /// (user, node) entries in `by_user`.
    entries: usize,
    /// Bound of `entries` (`cluster.max_user_entries`).
    max_entries: usize,
    /// Counts not kept because the table was full.
    refused: u64,
}

/// A node id's index in [`UserTable::nodes`] (a table never names more nodes than entries).
type NodeIx = u32;

impl UserTable {
    pub fn new(max_entries: usize) -> UserTable {
        UserTable {
            by_user: HashMap::new(),
            nodes: Vec::new(),
            node_ix: HashMap::new(),
            entries: 0,
            max_entries,
            refused: 0,
        }
    }

    /// `node` has `n` connections of `user`; `false` when that could not be kept (full).
    pub fn set(&mut self, node: &str, user: String, n: u32) -> bool {
        let ix = self.node_ix.get(node).copied();
        if n == 0 {
            let Some(ix) = ix else { return true };
            let Some(list) = self.by_user.get_mut(&user) else {
                return true;
            };
            if let Some(at) = list.iter().position(|(i, _)| *i == ix) {
                list.swap_remove(at);
                if list.is_empty() {
                    self.by_user.remove(&user);
                }
                self.entries -= 1;
                self.release(ix, 1);
            }
            return true;
        }
        if let Some(ix) = ix {
            if let Some(e) = self
                .by_user
                .get_mut(&user)
                .and_then(|l| l.iter_mut().find(|(i, _)| *i == ix))
            {
                e.1 = n;
                return true;
            }
        }
        if self.entries >= self.max_entries {
            self.refused += 1;
            return false;
        }
        let ix = ix.unwrap_or_else(|| self.intern(node));
        self.by_user.entry(user).or_default().push((ix, n));
        self.entries += 1;
        if let Some(Some((_, count))) = self.nodes.get_mut(ix as usize) {
            *count += 1;
        }
        true
    }

    /// The index of `node` (new: the first free slot).
    fn intern(&mut self, node: &str) -> NodeIx {
        let slot = match self.nodes.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.nodes.push(None);
                self.nodes.len() - 1
            }
        };
        self.nodes[slot] = Some((node.to_owned(), 0));
        let ix = slot as NodeIx;
        self.node_ix.insert(node.to_owned(), ix);
        ix
    }

    /// `n` of node `ix`'s entries went; its id is forgotten with its last one.
    fn release(&mut self, ix: NodeIx, n: usize) {
        let Some(slot) = self.nodes.get_mut(ix as usize) else {
            return;
        };
        if let Some((id, count)) = slot {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.node_ix.remove(id.as_str());
                *slot = None;
            }
        }
    }

    /// Forgets `node`'s counts (it left, died, or is about to send its whole table).
    pub fn forget(&mut self, node: &str) {
        let Some(ix) = self.node_ix.get(node).copied() else {
            return;
        };
        let mut gone = 0;
        self.by_user.retain(|_, list| {
            let before = list.len();
            list.retain(|(i, _)| *i != ix);
            gone += before - list.len();
            !list.is_empty()
        });
        self.entries -= gone;
        self.release(ix, usize::MAX);
    }

    pub fn clear(&mut self) {
        self.by_user.clear();
        self.nodes.clear();
        self.node_ix.clear();
        self.entries = 0;
    }

    /// `user`'s connections on the other nodes.
    pub fn elsewhere(&self, user: &str) -> u32 {
        self.by_user.get(user).map_or(0, |list| {
            list.iter().map(|(_, n)| *n).fold(0, u32::saturating_add)
        })
    }

    /// Connections of every user on the other nodes (`/metrics`).
    pub fn total(&self) -> u64 {
        self.by_user
            .values()
            .flatten()
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// (user, node) entries kept (`/metrics`).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Counts not kept because the table was full (`/metrics`).
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// One `{prefix}.conns` message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub node: String,
    pub full: bool,
    pub ask: bool,
    pub users: Vec<(String, u32)>,
}

/// Longest node id (`cluster.node_id`: 1 to 64 letters, digits, '-' or '_').
const MAX_NODE_ID_LEN: usize = 64;

/// Users per message, so one stays far below the broker's payload limit (1 MiB default).
pub(crate) const USERS_PER_MESSAGE: usize = 2_000;

pub(crate) fn encode(node: &str, full: bool, ask: bool, users: &[(String, u32)]) -> Vec<u8> {
    let mut text = node.to_owned();
    if full {
        text.push_str(" full");
    }
    if ask {
        text.push_str(" ask");
    }
    for (user, n) in users {
        text.push('\n');
        text.push_str(&super::subject::token(user));
        text.push(' ');
        text.push_str(&n.to_string());
    }
    text.into_bytes()
}

pub(crate) fn decode(payload: &[u8]) -> Option<Counts> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut lines = text.split('\n');
    let mut head = lines.next()?.split(' ');
    let node = head.next()?.to_owned();
    let flags: Vec<&str> = head.collect();
    let mut users = Vec::new();
    if node.is_empty() || node.len() > MAX_NODE_ID_LEN {
        return None;
    }
    for line in lines {
        let (t, n) = line.split_once(' ')?;
        let user = super::subject::untoken(t)?;
        if user.len() > ringport_proto::MAX_NAME_LEN {
            return None;
        }
        users.push((user, n.parse().ok()?));
    }
    Some(Counts {
        node,
        full: flags.contains(&"full"),
        ask: flags.contains(&"ask"),
        users,
    })
}

/// Tells the other nodes this node's counts of the users that changed (or all of them, see
/// the module docs). Runs on the bridge.
pub(super) async fn publish(
    client: &Client,
    bus: &ClusterBus,
    shared: &Weak<Shared>,
    timeout: Duration,
) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if !bus.track_users {
        // No cap here: nothing is counted, so there is nothing to tell.
        return;
    }
    if !bus.connected.load(Ordering::Acquire) {
        // Whatever changes meanwhile: the whole table goes once the broker is back.
        bus.users_resync.store(true, Ordering::Release);
        return;
    }
    let full = bus.users_resync.swap(false, Ordering::AcqRel);
    let ask = bus.users_ask.swap(false, Ordering::AcqRel);
    let dirty = std::mem::take(&mut *bus.users_dirty.lock().unwrap_or_else(|p| p.into_inner()));
    let counts = &shared.user_counts;
    let list: Vec<(String, u32)> = if full {
        counts
            .snapshot()
            .into_iter()
            .map(|(u, n)| (u.to_string(), n))
            .collect()
    } else {
        dirty
            .into_iter()
            .map(|u| {
                let n = counts.count(&u);
                (u, n)
            })
            .collect()
    };
    if list.is_empty() && !full && !ask {
        return;
    }
    let mut chunks: Vec<&[(String, u32)]> = list.chunks(USERS_PER_MESSAGE).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (i, chunk) in chunks.into_iter().enumerate() {
        let first = i == 0;
        let body = encode(&bus.node_id, full && first, ask && first, chunk);
        let sent = client.publish(subject::conns(&bus.prefix), body.into());
        if !matches!(tokio::time::timeout(timeout, sent).await, Ok(Ok(()))) {
            // Lost on the way: the whole table goes next time.
            bus.users_resync.store(true, Ordering::Release);
            return;
        }
    }
}

/// Keeps what the other nodes say about their connections per user.
pub(super) async fn receive(mut sub: async_nats::Subscriber, bus: Arc<ClusterBus>) {
    while let Some(msg) = sub.next().await {
        if let Some(m) = decode(&msg.payload) {
            bus.apply_counts(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_sum_over_nodes() {
        let users = vec![("a b".to_owned(), 2), ("c".to_owned(), 1)];
        let m = decode(&encode("n1", true, false, &users)).unwrap();
        assert_eq!(
            m,
            Counts {
                node: "n1".into(),
                full: true,
                ask: false,
                users: users.clone(),
            }
        );
        let mut t = UserTable::new(100);
        for (u, n) in users {
            t.set("n1", u, n);
        }
        t.set("n2", "c".into(), 3);
        assert_eq!(t.elsewhere("c"), 4);
        assert_eq!(t.total(), 6);
        t.set("n2", "c".into(), 0);
        assert_eq!(t.elsewhere("c"), 1);
        t.forget("n1");
        assert_eq!(t.total(), 0);
        assert!(decode(b"n1\nbad").is_none());
    }

    #[test]
    fn the_table_is_bounded_and_interns_node_ids() {
        let mut t = UserTable::new(3);
        assert!(t.set("n1", "a".into(), 1));
        assert!(t.set("n1", "b".into(), 1));
        assert!(t.set("n2", "a".into(), 2));
        assert_eq!(t.entries(), 3);
        // Full: a new (user, node) is refused and counted; updating a kept one still works.
        assert!(!t.set("n2", "c".into(), 1));
        assert!(!t.set("n3", "a".into(), 1));
        assert_eq!(t.refused(), 2);
        assert!(t.set("n2", "a".into(), 5));
        assert_eq!(t.elsewhere("a"), 6);
        assert_eq!(t.elsewhere("c"), 0);
        // A node id is kept once, and only while it has entries: a peer sending many
        // node names gets no further than the bound.
        assert_eq!(t.node_ix.len(), 2);
        assert!(t.set("n2", "a".into(), 0));
        assert_eq!(t.node_ix.len(), 1);
        assert!(t.set("n3", "a".into(), 1));
        assert_eq!(t.node_ix.len(), 2);
        assert_eq!(t.nodes.len(), 2, "n3 took n2's free slot");
        t.forget("n1");
        assert_eq!((t.entries(), t.total()), (1, 1));
        assert_eq!(t.node_ix.len(), 1);
        assert!(
            t.set("n1", "z".into(), 0),
            "zero for an unknown node is a no-op"
        );
        assert_eq!(t.entries(), 1);
    }

    #[test]
    fn names_longer_than_the_protocol_allows_are_refused() {
        let long = "u".repeat(ringport_proto::MAX_NAME_LEN + 1);
        assert!(decode(&encode("n1", false, false, &[(long, 1)])).is_none());
        assert!(decode(format!("{}\nu 1", "n".repeat(65)).as_bytes()).is_none());
        assert!(decode(b"n1\nu 1").is_some());
    }
}
