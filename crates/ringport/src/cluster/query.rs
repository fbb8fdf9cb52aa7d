//! Cluster-wide counts: `GET /v1/rooms/{room}`, `/v1/rooms/{room}/presence` and `/v1/stats`
//! sum every live node (scatter-gather over the bus).
//!
//! The node that gets the HTTP request computes its own answer from its shards, publishes
//! the [`Query`] once on `{prefix}.query` with a reply inbox, and collects one [`Answer`]
//! per other node until every node it counts as live (heartbeats, `members.rs`) answered
//! or `cluster.query_timeout_ms` passed. The sums carry a [`ClusterScope`]: the nodes
//! expected and answered, each node's count, and `partial: true` with the missing nodes
//! when one did not answer (stopped, overloaded, cut off) — never a silent undercount.
//! Every node subscribes to `{prefix}.query` and answers from its own shards on a task of
//! its own (`serve`), so a slow shard delays only that answer.
//!
//! Distinct counts (`users`, `rooms`) are exact per node and summed over nodes: a user or
//! room present on several nodes counts once per node (docs/architecture.md, "Cluster").

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt as _;
use ringport_io::EngineHandle;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{subject, ClusterBus};
use crate::gateway::{EngineGateway, GatewayHandler, Shared};
use crate::http::{ClusterScope, GatewayStats, NodeCount, Presence, RoomInfo};

/// What one node asks the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Query {
    /// `GET /v1/stats`.
    Stats,
    /// `GET /v1/rooms/{room}?sample=`.
    Room { room: String, sample: usize },
    /// `GET /v1/rooms/{room}/presence?after=&limit=`: each node answers its own page.
    Presence {
        room: String,
        after: Option<String>,
        limit: usize,
    },
}

/// One node's answer: its id and its local result.
#[derive(Debug, Serialize, Deserialize)]
struct Answer<T> {
    node: String,
    body: T,
}

/// What the other nodes answered, and which live ones did not.
#[derive(Debug)]
pub(crate) struct Gathered<T> {
    pub answers: Vec<(String, T)>,
    pub missing: Vec<String>,
}

impl ClusterBus {
    /// Asks every other live node `q` and waits for their answers, at most
    /// `cluster.query_timeout_ms`. Nodes that did not answer (or all of them, when the
    /// broker is unreachable) are `missing`.
    pub(crate) async fn gather<T: DeserializeOwned>(&self, q: &Query) -> Gathered<T> {
        let expected = self.members().live_others(self.now_ms());
        let mut g = Gathered {
            answers: Vec::new(),
            missing: Vec::new(),
        };
        let client = match self.client.get() {
            Some(c) if self.connected.load(Ordering::Acquire) => c,
            _ => {
                g.missing = expected;
                self.count_query(&g.missing);
                return g;
            }
        };
        if expected.is_empty() {
            self.count_query(&g.missing);
            return g;
        }
        let deadline = tokio::time::Instant::now() + self.query_timeout;
        let mut pending: HashSet<String> = expected.into_iter().collect();
        if let Err(e) = ask(client, &self.prefix, q, deadline, &mut pending, &mut g).await {
            tracing::debug!(node = %self.node_id, "cluster: count query: {e}");
        }
        g.missing = pending.into_iter().collect();
        g.missing.sort_unstable();
        self.count_query(&g.missing);
        g
    }

    fn count_query(&self, missing: &[String]) {
        let i = usize::from(!missing.is_empty());
        self.queries[i].fetch_add(1, Ordering::Relaxed);
        if !missing.is_empty() {
            tracing::debug!(node = %self.node_id, ?missing, "cluster: a count query is partial");
        }
    }
}

/// Publishes `q` with a reply inbox and collects answers into `g` until `pending` is empty
/// or `deadline`.
async fn ask<T: DeserializeOwned>(
    client: &Client,
    prefix: &str,
    q: &Query,
    deadline: tokio::time::Instant,
    pending: &mut HashSet<String>,
    g: &mut Gathered<T>,
) -> Result<(), String> {
    let payload = serde_json::to_vec(q).map_err(|e| e.to_string())?;
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(subject::query(prefix), inbox, payload.into())
        .await
        .map_err(|e| e.to_string())?;
    while !pending.is_empty() {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let Ok(a) = serde_json::from_slice::<Answer<T>>(&msg.payload) else {
            continue;
        };
        pending.remove(&a.node);
        if !g.answers.iter().any(|(n, _)| *n == a.node) {
            g.answers.push((a.node, a.body));
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(())
}

/// Answers the other nodes' queries from this node's shards, each on a task of its own.
pub(super) async fn serve(
    client: Client,
    sub: async_nats::Subscriber,
    bus: Arc<ClusterBus>,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) {
    let node = bus.node_id.clone();
    super::bridge::serve_requests(client, sub, &bus, shared, |msg, shared| {
        let q = serde_json::from_slice::<Query>(&msg.payload).ok()?;
        let gateway = EngineGateway::new(handle.clone(), shared);
        let node = node.clone();
        // Answered on a task of its own: a count waits for every shard.
        Some(async move {
            match q {
                Query::Stats => encode(node, gateway.local_stats().await),
                Query::Room { room, sample } => {
                    encode(node, gateway.local_room_info(room, sample).await)
                }
                Query::Presence { room, after, limit } => {
                    encode(node, gateway.local_presence(room, after, limit).await)
                }
            }
        })
    })
    .await;
}

fn encode<T: Serialize, E>(node: String, r: Result<T, E>) -> Option<Bytes> {
    let body = r.ok()?;
    serde_json::to_vec(&Answer { node, body })
        .ok()
        .map(Bytes::from)
}

/// The scope of a sum: this node (`me`, with `mine`) and the nodes that answered.
fn scope<T>(me: &str, mine: u64, g: &Gathered<T>, online: impl Fn(&T) -> u64) -> ClusterScope {
    let mut nodes = vec![NodeCount {
        node: me.to_owned(),
        online: mine,
    }];
    nodes.extend(g.answers.iter().map(|(node, a)| NodeCount {
        node: node.clone(),
        online: online(a),
    }));
    let answered = nodes.len() as u64;
    ClusterScope {
        node: me.to_owned(),
        nodes_expected: answered + g.missing.len() as u64,
        nodes_answered: answered,
        partial: !g.missing.is_empty(),
        missing: g.missing.clone(),
        nodes,
    }
}

/// `GET /v1/rooms/{room}` over the cluster: counts summed, members sampled from every node.
pub(crate) fn merge_room(
    me: &str,
    mut local: RoomInfo,
    g: Gathered<RoomInfo>,
    sample: usize,
) -> RoomInfo {
    let scope = scope(me, local.online, &g, |a| a.online);
    for (_, a) in g.answers {
        local.online += a.online;
        local.members.extend(a.members);
    }
    local.members.truncate(sample);
    local.cluster = Some(scope);
    local
}

/// `GET /v1/rooms/{room}/presence` over the cluster. Each node answered its own first
/// `limit` users after `after`, so the cluster's first `limit` are among them: merged by
/// user (connections summed), the page is exact. `users` sums each node's distinct users.
pub(crate) fn merge_presence(
    me: &str,
    mut local: Presence,
    g: Gathered<Presence>,
    limit: usize,
) -> Presence {
    let scope = scope(me, local.online, &g, |a| a.online);
    let mut more = local.next.is_some();
    let mut users: BTreeMap<String, u64> = BTreeMap::new();
    for m in local.members.drain(..) {
        *users.entry(m.user).or_default() += m.connections;
    }
    for (_, a) in g.answers {
        local.online += a.online;
        local.users += a.users;
        local.anonymous += a.anonymous;
        more |= a.next.is_some();
        for m in a.members {
            *users.entry(m.user).or_default() += m.connections;
        }
    }
    more |= users.len() > limit;
    local.members = users
        .into_iter()
        .take(limit)
        .map(|(user, connections)| crate::http::PresenceUser { user, connections })
        .collect();
    local.next = if more {
        local.members.last().map(|m| m.user.clone())
    } else {
        None
    };
    local.cluster = Some(scope);
    local
}

/// `GET /v1/stats` over the cluster: connections, rooms and users summed (`shards`,
/// `uptime_seconds` and the I/O backend stay this node's).
pub(crate) fn merge_stats(
    me: &str,
    mut local: GatewayStats,
    g: Gathered<GatewayStats>,
) -> GatewayStats {
    let open = |s: &GatewayStats| {
        s.connections.handshaking + s.connections.active + s.connections.sleeping
    };
    let scope = scope(me, open(&local), &g, open);
    for (_, a) in g.answers {
        local.connections.handshaking += a.connections.handshaking;
        local.connections.active += a.connections.active;
        local.connections.sleeping += a.connections.sleeping;
        local.rooms += a.rooms;
        local.users += a.users;
    }
    local.cluster = Some(scope);
    local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::PresenceUser;

    fn page(users: &[(&str, u64)], next: bool) -> Presence {
        let members: Vec<PresenceUser> = users
            .iter()
            .map(|(u, n)| PresenceUser {
                user: (*u).to_owned(),
                connections: *n,
            })
            .collect();
        Presence {
            room: "r".into(),
            online: users.iter().map(|(_, n)| n).sum(),
            users: users.len() as u64,
            anonymous: 0,
            next: next.then(|| members.last().unwrap().user.clone()),
            members,
            cluster: None,
        }
    }

    #[test]
    fn presence_pages_merge_users_across_nodes() {
        // Page size 2: node a has u1, u3 (and more), node b has u1, u2.
        let local = page(&[("u1", 1), ("u3", 2)], true);
        let g = Gathered {
            answers: vec![("b".to_owned(), page(&[("u1", 2), ("u2", 1)], false))],
            missing: vec!["c".to_owned()],
        };
        let p = merge_presence("a", local, g, 2);
        let got: Vec<(&str, u64)> = p
            .members
            .iter()
            .map(|m| (m.user.as_str(), m.connections))
            .collect();
        assert_eq!(got, vec![("u1", 3), ("u2", 1)]);
        assert_eq!(p.next.as_deref(), Some("u2"));
        assert_eq!(p.online, 6);
        let scope = p.cluster.unwrap();
        assert_eq!((scope.nodes_expected, scope.nodes_answered), (3, 2));
        assert!(scope.partial);
        assert_eq!(scope.missing, vec!["c".to_owned()]);
    }

    #[test]
    fn a_last_page_has_no_next() {
        let g = Gathered {
            answers: vec![("b".to_owned(), page(&[("u2", 1)], false))],
            missing: vec![],
        };
        let p = merge_presence("a", page(&[("u1", 1)], false), g, 5);
        assert_eq!(p.next, None);
        assert_eq!(p.members.len(), 2);
        assert!(!p.cluster.unwrap().partial);
    }

    #[test]
    fn queries_round_trip_as_json() {
        for q in [
            Query::Stats,
            Query::Room {
                room: "a.b".into(),
                sample: 3,
            },
            Query::Presence {
                room: "r".into(),
                after: Some("u".into()),
                limit: 10,
            },
        ] {
            let text = serde_json::to_vec(&q).unwrap();
            assert_eq!(serde_json::from_slice::<Query>(&text).unwrap(), q);
        }
    }
}
