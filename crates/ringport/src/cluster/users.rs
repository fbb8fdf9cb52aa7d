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

/// What the other nodes said about their connections per user.
#[derive(Debug, Default)]
pub(crate) struct UserTable {
    /// user -> (node -> connections there).
    by_user: HashMap<String, HashMap<String, u32>>,
}

impl UserTable {
    /// `node` has `n` connections of `user`.
    pub fn set(&mut self, node: &str, user: String, n: u32) {
        if n == 0 {
            if let Some(nodes) = self.by_user.get_mut(&user) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.by_user.remove(&user);
                }
            }
            return;
        }
        self.by_user
            .entry(user)
            .or_default()
            .insert(node.to_owned(), n);
    }

    /// Forgets `node`'s counts (it left, died, or is about to send its whole table).
    pub fn forget(&mut self, node: &str) {
        self.by_user.retain(|_, nodes| {
            nodes.remove(node);
            !nodes.is_empty()
        });
    }

    pub fn clear(&mut self) {
        self.by_user.clear();
    }

    /// `user`'s connections on the other nodes.
    pub fn elsewhere(&self, user: &str) -> u32 {
        self.by_user.get(user).map_or(0, |nodes| {
            nodes.values().copied().fold(0, u32::saturating_add)
        })
    }

    /// Connections of every user on the other nodes (`/metrics`).
    pub fn total(&self) -> u64 {
        self.by_user
            .values()
            .flat_map(|nodes| nodes.values())
            .map(|n| u64::from(*n))
            .sum()
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
    for line in lines {
        let (t, n) = line.split_once(' ')?;
        users.push((super::subject::untoken(t)?, n.parse().ok()?));
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
        let Some(m) = decode(&msg.payload) else {
            continue;
        };
        if m.node == bus.node_id {
            continue;
        }
        let mut table = bus.users.lock().unwrap_or_else(|p| p.into_inner());
        if m.full {
            table.forget(&m.node);
        }
        for (user, n) in m.users {
            table.set(&m.node, user, n);
        }
        drop(table);
        if m.ask {
            bus.users_resync.store(true, Ordering::Release);
            bus.users_changed.notify_one();
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
        let mut t = UserTable::default();
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
}
