//! The cluster bus: several gateways over NATS (`--cluster`, `[cluster]`).
//!
//! What crosses the bus is the *message*, not its frame: a push or client PUBLISH is numbered
//! by its stream's owner node, delivered there as on a single node, and handed to the bus
//! with its (epoch, offset) ([`ClusterBus::forward`], a non-blocking `try_send` into a
//! bounded queue, so the shards never wait for the broker). The bridge thread (`bridge.rs`,
//! a tokio runtime of its own on the control plane) publishes it once on the stream's
//! subject (`subject.rs`); every other node subscribed to it receives it once, keeps it at
//! the owner's offset in its own stream log and delivers it through the same hand-off queues
//! as a local push (encoded once per node, coalesced per shard turn).
//!
//! Interest: a node subscribes to a room's or user's subject while at least one of its
//! shards has a member of it ([`ClusterBus::interest`], called by the shard's room and user
//! indexes when their first member joins or last one leaves), and always to the broadcast
//! subject. The bridge brings its subscriptions in line with that table whenever it
//! changes; the NATS client re-subscribes all of them after a reconnect.
//!
//! Faults: while the broker is unreachable, the queue is full or the NATS client's own
//! buffer stays full for `cluster.publish_timeout_ms`, a message is delivered on its own
//! node only and counted in `ringport_cluster_dropped_total{reason}` (with a warning in the
//! log, at most one a second). The HTTP answer of such a push carries a `warning`; a client
//! PUBLISH gets an ERROR just before its PUBLISH_ACK.
//!
//! One sequence per stream (`members.rs`, `owner.rs`): each stream is numbered by one live
//! node, its owner by rendezvous hashing; other nodes forward publishes to it and keep its
//! numbered messages at the owner's (epoch, offset) in their own replica
//! (`cluster.replicate_history`), so a client resumes on any node.
//!
//! Departure (`handover.rs`): a node shut down gracefully stops numbering, hands its last
//! messages to the broker and announces `leaving` before its clients get GOING_AWAY; nodes
//! that received every message it numbered continue its streams in its epoch.
//!
//! Counts (`query.rs`): `GET /v1/rooms/{room}`, its presence and `/v1/stats` are summed
//! over every live node by a scatter-gather request, bounded by `cluster.query_timeout_ms`,
//! and say `partial` when a node did not answer.
//!
//! Per-user connection limits (`users.rs`): every node tells the others its connections per
//! user, and a HELLO is refused when the user's connections on all nodes reach the cap.

mod bridge;
mod handover;
pub(crate) mod members;
mod owner;
pub(crate) mod query;
pub(crate) mod subject;
mod users;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use ringport_proto::StreamName;

use crate::config::ClusterConfig;
use crate::gateway::Target;
use crate::metrics::text::{MetricType, TextWriter};

pub(crate) use bridge::start;
pub(crate) use owner::OwnerAnswer;

/// Why a message did not reach the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The broker connection is down (reconnecting).
    Unreachable,
    /// `cluster.max_pending` messages already wait for the broker connection.
    QueueFull,
    /// The NATS client did not take the message within `cluster.publish_timeout_ms`.
    Timeout,
    /// A message from another node found this node's shards too far behind
    /// (`rooms.max_pending_deliveries`).
    Backlog,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::Unreachable,
        DropReason::QueueFull,
        DropReason::Timeout,
        DropReason::Backlog,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unreachable => "unreachable",
            DropReason::QueueFull => "queue_full",
            DropReason::Timeout => "timeout",
            DropReason::Backlog => "backlog",
        }
    }
}

/// One message on its way to the broker.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub subject: String,
    pub payload: Bytes,
    pub urgent: bool,
    /// A client PUBLISH (counted as `publish` deliveries on every node) rather than a push.
    pub client_publish: bool,
    /// The owner's numbering of the message (it was numbered on this node).
    pub numbered: Option<(u32, u64)>,
    /// Not numbered yet: the bridge asks this node (the stream's owner) to number it.
    pub to_owner: Option<String>,
    /// This node's sequence of the messages it numbered (`handover.rs`), 0 when not numbered.
    pub seq: u64,
}

/// The node's side of the cluster: what shards and the HTTP API call, and the counters.
#[derive(Debug)]
pub(crate) struct ClusterBus {
    node_id: String,
    prefix: String,
    outbound: mpsc::Sender<Outbound>,
    /// Subjects with members on this node: subject -> shards with at least one member.
    interest: Mutex<HashMap<String, u32>>,
    /// Rung when `interest` changed.
    interest_changed: Notify,
    /// The broker connection is up (the bridge keeps it current).
    connected: AtomicBool,
    /// When (the `members` ms clock) the broker last answered the request this node sends
    /// with each heartbeat (to a subject nobody serves: "no responders"): a broker that accepts publishes but processes nothing (stopped,
    /// wedged) is noticed by its silence, even while the TCP connection looks fine.
    echo_ms: AtomicU64,
    forwarded: AtomicU64,
    received: AtomicU64,
    dropped: [AtomicU64; 4],
    disconnects: AtomicU64,
    subscriptions: AtomicU64,
    /// Wall ms of the last drop warning (at most one a second).
    last_warning_ms: AtomicU64,
    /// The live nodes (heartbeats on `PREFIX.nodes`), deciding each stream's owner.
    members: Mutex<members::Members>,
    /// Zero of the ms clock `members` runs on.
    started: Instant,
    /// Every node keeps a replica of every stream (`cluster.replicate_history`), so a resume
    /// is served on any node; else only streams with members here.
    replicate_history: bool,
    /// The NATS client once connected, for requests made off the bridge thread (an HTTP
    /// push whose stream another node owns).
    client: OnceLock<async_nats::Client>,
    /// Request timeout for forwarding a publish to its stream's owner.
    owner_timeout: std::time::Duration,
    /// How long a cluster-wide count waits for the other nodes (`cluster.query_timeout_ms`).
    query_timeout: Duration,
    /// Count queries this node made: every live node answered / some did not (partial).
    queries: [AtomicU64; 2],
    /// `limits.max_connections_per_user` is set: the node counts its users' connections,
    /// tells the other nodes and keeps theirs. Without a cap none of that exists.
    track_users: bool,
    /// The other nodes' connections per user (`users.rs`), bounded by
    /// `cluster.max_user_entries`.
    users: Mutex<users::UserTable>,
    /// Wall ms of the last warning that `users` is full (at most one a second).
    last_users_full_warning_ms: AtomicU64,
    /// Users whose count on this node changed since the bridge last told the other nodes.
    users_dirty: Mutex<HashSet<String>>,
    /// Rung when `users_dirty` got its first entry.
    users_changed: Notify,
    /// The bridge sends this node's whole table next (a node joined, the broker came back,
    /// or more users changed than `cluster.max_pending`).
    users_resync: AtomicBool,
    /// ... and asks every other node for theirs (this node knows nothing: (re)connected).
    users_ask: AtomicBool,
    /// Bound of `users_dirty` (`cluster.max_pending`).
    max_pending: usize,
    /// Per-user caps checked against this node's counts only (broker unreachable).
    users_local_only: AtomicU64,
    /// Wall ms of the last warning about it (at most one a second).
    last_local_warning_ms: AtomicU64,
    /// This process's epoch (set once the stream sink exists): with the node id, names this
    /// incarnation of the node in `Rp-Seq` and `leaving`.
    epoch: AtomicU32,
    /// Messages this node numbered in the cluster (the last `Rp-Seq` used).
    numbered: AtomicU64,
    /// The node is leaving (graceful shutdown): it numbers nothing more, every stream has
    /// another owner.
    leaving: AtomicBool,
    /// Rung by [`ClusterBus::leave`]: the bridge publishes what is queued, then `leaving`.
    leave_requested: Notify,
    /// Set (and signalled) once the bridge announced the leave, or cannot.
    left: (Mutex<bool>, Condvar),
    /// What arrived from each other node, to continue the epochs of nodes that left.
    handovers: Mutex<handover::Handovers>,
    /// Epochs this node continues for nodes that left (announced again when it leaves).
    adopted: Mutex<Vec<u32>>,
}

/// The receiving half the bridge owns.
pub(crate) struct BusQueue(mpsc::Receiver<Outbound>);

impl ClusterBus {
    /// The bus for `config` (whose `servers` is set) and the queue the bridge drains;
    /// `per_user_cap` is `limits.max_connections_per_user` (0: no cap, no user table).
    pub fn new(config: &ClusterConfig, per_user_cap: u32) -> (Arc<ClusterBus>, BusQueue) {
        let (tx, rx) = mpsc::channel(config.max_pending.max(1) as usize);
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            format!("node-{:08x}", u32::from_be_bytes(b))
        });
        let bus = ClusterBus {
            node_id: node_id.clone(),
            prefix: config.subject_prefix.clone(),
            outbound: tx,
            interest: Mutex::new(HashMap::new()),
            interest_changed: Notify::new(),
            connected: AtomicBool::new(false),
            echo_ms: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: Default::default(),
            disconnects: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
            members: Mutex::new(members::Members::new(&node_id)),
            started: Instant::now(),
            replicate_history: config.replicate_history,
            client: OnceLock::new(),
            owner_timeout: std::time::Duration::from_millis(config.publish_timeout_ms),
            query_timeout: Duration::from_millis(config.query_timeout_ms),
            queries: Default::default(),
            track_users: per_user_cap > 0,
            users: Mutex::new(users::UserTable::new(config.max_user_entries as usize)),
            last_users_full_warning_ms: AtomicU64::new(0),
            users_dirty: Mutex::new(HashSet::new()),
            users_changed: Notify::new(),
            users_resync: AtomicBool::new(true),
            users_ask: AtomicBool::new(true),
            max_pending: config.max_pending.max(1) as usize,
            users_local_only: AtomicU64::new(0),
            last_local_warning_ms: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            numbered: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            leave_requested: Notify::new(),
            left: (Mutex::new(false), Condvar::new()),
            handovers: Mutex::new(handover::Handovers::default()),
            adopted: Mutex::new(Vec::new()),
        };
        (Arc::new(bus), BusQueue(rx))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// ms on the membership clock.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn members(&self) -> std::sync::MutexGuard<'_, members::Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node that numbers `stream`, when it is another live node. `None` means this node
    /// numbers it: it is the owner, or the broker is unreachable (a node cut off numbers
    /// everything itself, in its own epoch, and says so in its answers).
    pub fn remote_owner(&self, stream: &StreamName) -> Option<String> {
        if !self.connected.load(Ordering::Acquire) {
            return None;
        }
        let now = self.now_ms();
        self.members().owner(stream, now).map(str::to_owned)
    }

    /// This node numbers `stream` as its owner: connected, not leaving, and the owner by
    /// rendezvous among the live nodes (so it may continue a handed-over epoch).
    pub fn owns(&self, stream: &StreamName) -> bool {
        self.connected.load(Ordering::Acquire) && self.remote_owner(stream).is_none()
    }

    /// The process epoch of this node (its stream sink's), for `Rp-Seq` and `leaving`.
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    fn handovers(&self) -> std::sync::MutexGuard<'_, handover::Handovers> {
        self.handovers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Graceful departure, before the node's clients are sent GOING_AWAY: from now on every
    /// stream has another owner (this node forwards what it is given); `barrier` returns
    /// once every numbering in flight has handed its message to the bus; then the bridge
    /// publishes what is queued and announces `leaving` with the last sequence it numbered,
    /// so the other nodes take its streams over in the same epoch (`handover.rs`). Waits
    /// for that at most `wait`. Idempotent.
    pub fn leave(&self, barrier: impl FnOnce(), wait: Duration) {
        if self.leaving.swap(true, Ordering::AcqRel) {
            return;
        }
        self.members().leaving();
        barrier();
        self.leave_requested.notify_one();
        let (done, signal) = &self.left;
        let guard = done.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, timeout) = signal
            .wait_timeout_while(guard, wait, |done| !*done)
            .unwrap_or_else(|p| p.into_inner());
        drop(guard);
        if timeout.timed_out() {
            tracing::warn!(node = %self.node_id, "cluster: leaving: the broker did not take the announcement in time; the other nodes will notice the silence");
        }
    }

    /// The bridge announced the leave (or never will): [`Self::leave`] returns.
    fn mark_left(&self) {
        let (done, signal) = &self.left;
        *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        signal.notify_all();
    }

    /// Live nodes, this one included (`ringport_cluster_nodes`).
    pub fn live_nodes(&self) -> usize {
        let now = self.now_ms();
        self.members().live(now)
    }

    /// The bus message for `target` (neither numbered nor for an owner yet).
    fn outbound_for(
        &self,
        target: &Target,
        payload: &Bytes,
        urgent: bool,
        client_publish: bool,
    ) -> Outbound {
        Outbound {
            subject: subject::of(&self.prefix, target),
            payload: payload.clone(),
            urgent,
            client_publish,
            numbered: None,
            to_owner: None,
            seq: 0,
        }
    }

    /// Hands a message to the bus without waiting: numbered on this node (`numbered`), or to
    /// be numbered by its owner (`to_owner`). `Err` says why it will not reach the other
    /// nodes (it was counted and logged).
    pub fn forward(
        &self,
        target: &Target,
        payload: &Bytes,
        urgent: bool,
        client_publish: bool,
        numbered: Option<(u32, u64)>,
        to_owner: Option<String>,
    ) -> Result<(), DropReason> {
        // Counted before anything can fail: a numbered message that does not cross is a
        // hole in this node's sequence, so no other node continues its epochs.
        let seq = match numbered {
            Some(_) => self.numbered.fetch_add(1, Ordering::AcqRel) + 1,
            None => 0,
        };
        if !self.connected.load(Ordering::Acquire) {
            self.dropped(DropReason::Unreachable);
            return Err(DropReason::Unreachable);
        }
        let mut m = self.outbound_for(target, payload, urgent, client_publish);
        m.numbered = numbered;
        m.to_owner = to_owner;
        m.seq = seq;
        match self.outbound.try_send(m) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped(DropReason::QueueFull);
                Err(DropReason::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped(DropReason::Unreachable);
                Err(DropReason::Unreachable)
            }
        }
    }

    /// A shard's first member of a room (`room`) or user's connection (`user`) appeared
    /// (`joined`) or its last one left.
    pub fn interest(&self, target: &Target, joined: bool) {
        let subject = subject::of(&self.prefix, target);
        let mut table = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if joined {
            let n = table.entry(subject).or_insert(0);
            *n += 1;
            *n == 1
        } else {
            match table.get_mut(&subject) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    table.remove(&subject);
                    true
                }
                None => false,
            }
        };
        drop(table);
        if changed {
            self.interest_changed.notify_one();
        }
    }

    /// The subjects this node should be subscribed to now.
    fn wanted(&self) -> Vec<String> {
        if self.replicate_history {
            return subject::every_stream(&self.prefix);
        }
        let table = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = table.keys().cloned().collect();
        v.push(subject::all(&self.prefix));
        v
    }

    /// Counts one message that did not cross the bus and warns (at most once a second).
    pub fn dropped(&self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        let total = self.dropped[i].fetch_add(1, Ordering::Relaxed) + 1;
        if once_a_second(&self.last_warning_ms) {
            tracing::warn!(
                node = %self.node_id,
                reason = reason.as_str(),
                dropped_total = total,
                "cluster: a message did not cross the bus (delivered on its own node only)"
            );
        }
    }

    /// `user`'s connections on the other nodes, for its per-user cap. With the broker
    /// unreachable the other nodes' counts are unknown: 0 (each node enforces the cap on its
    /// own connections), counted and logged.
    pub fn user_connections_elsewhere(&self, user: &str) -> u32 {
        if !self.track_users {
            return 0;
        }
        if self.connected.load(Ordering::Acquire) {
            return self
                .users
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elsewhere(user);
        }
        let total = self.users_local_only.fetch_add(1, Ordering::Relaxed) + 1;
        if once_a_second(&self.last_local_warning_ms) {
            tracing::warn!(
                node = %self.node_id,
                local_only_total = total,
                "cluster: the broker is unreachable; limits.max_connections_per_user is checked against this node's connections only"
            );
        }
        0
    }

    /// `user`'s connection count on this node changed: the bridge tells the other nodes.
    pub fn user_count_changed(&self, user: &str) {
        if !self.track_users {
            return;
        }
        let mut dirty = self.users_dirty.lock().unwrap_or_else(|p| p.into_inner());
        if dirty.len() >= self.max_pending {
            // Too many to list: the whole table goes next.
            dirty.clear();
            self.users_resync.store(true, Ordering::Release);
        } else {
            dirty.insert(user.to_owned());
        }
        let first = dirty.len() <= 1;
        drop(dirty);
        if first {
            self.users_changed.notify_one();
        }
    }

    /// Keeps what another node said about its connections per user (`users.rs`); nothing
    /// without a per-user cap here.
    fn apply_counts(&self, m: users::Counts) {
        if m.node == self.node_id || !self.track_users {
            return;
        }
        let mut table = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if m.full {
            table.forget(&m.node);
        }
        let mut refused = 0u64;
        for (user, n) in m.users {
            if !table.set(&m.node, user, n) {
                refused += 1;
            }
        }
        let entries = table.entries();
        drop(table);
        if refused > 0 && once_a_second(&self.last_users_full_warning_ms) {
            tracing::warn!(
                node = %self.node_id,
                from = %m.node,
                entries,
                refused,
                "cluster: the table of other nodes' connections per user is full (cluster.max_user_entries); those users' connections elsewhere are not counted against limits.max_connections_per_user here"
            );
        }
        if m.ask {
            self.users_resync.store(true, Ordering::Release);
            self.users_changed.notify_one();
        }
    }

    /// The `/metrics` families of the bus.
    pub fn render(&self, out: &mut String) {
        let mut w = TextWriter::new(out);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        w.family(
            "ringport_cluster_connected",
            "1 while the connection to the NATS broker is up.",
            MetricType::Gauge,
        );
        w.sample(
            "ringport_cluster_connected",
            &[("node", &self.node_id)],
            u64::from(self.connected.load(Ordering::Relaxed)),
        );
        w.family(
            "ringport_cluster_forwarded_total",
            "Messages published on this node and handed to the broker for the other nodes.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_cluster_forwarded_total",
            &[],
            load(&self.forwarded),
        );
        w.family(
            "ringport_cluster_received_total",
            "Messages from other nodes delivered on this node.",
            MetricType::Counter,
        );
        w.sample("ringport_cluster_received_total", &[], load(&self.received));
        w.family(
            "ringport_cluster_dropped_total",
            "Messages that did not cross the bus, by reason (delivered on their own node only).",
            MetricType::Counter,
        );
        for (r, n) in DropReason::ALL.iter().zip(&self.dropped) {
            w.sample(
                "ringport_cluster_dropped_total",
                &[("reason", r.as_str())],
                load(n),
            );
        }
        w.family(
            "ringport_cluster_disconnects_total",
            "Times the connection to the NATS broker was lost.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_cluster_disconnects_total",
            &[],
            load(&self.disconnects),
        );
        w.family(
            "ringport_cluster_nodes",
            "Live nodes of the cluster as this node sees them (heartbeats), itself included.",
            MetricType::Gauge,
        );
        w.sample("ringport_cluster_nodes", &[], self.live_nodes() as u64);
        w.family(
            "ringport_cluster_queries_total",
            "Cluster-wide counts this node asked the other nodes for (GET /v1/rooms/{room}, its presence, /v1/stats), by outcome: complete, or partial (a live node did not answer within cluster.query_timeout_ms).",
            MetricType::Counter,
        );
        for (outcome, n) in ["complete", "partial"].iter().zip(&self.queries) {
            w.sample(
                "ringport_cluster_queries_total",
                &[("outcome", outcome)],
                load(n),
            );
        }
        w.family(
            "ringport_cluster_user_connections_elsewhere",
            "Connections on the other nodes of users with connections anywhere, as the other nodes last told this one (what limits.max_connections_per_user adds to this node's own counts).",
            MetricType::Gauge,
        );
        let (elsewhere, entries, refused) = {
            let t = self.users.lock().unwrap_or_else(|p| p.into_inner());
            (t.total(), t.entries() as u64, t.refused())
        };
        w.sample(
            "ringport_cluster_user_connections_elsewhere",
            &[],
            elsewhere,
        );
        w.family(
            "ringport_cluster_user_entries",
            "(user, node) entries this node keeps of the other nodes' connections per user (only with limits.max_connections_per_user set), at most cluster.max_user_entries.",
            MetricType::Gauge,
        );
        w.sample("ringport_cluster_user_entries", &[], entries);
        w.family(
            "ringport_cluster_user_entries_refused_total",
            "Other nodes' per-user connection counts not kept because the table held cluster.max_user_entries entries (those connections are not counted against the cap here).",
            MetricType::Counter,
        );
        w.sample("ringport_cluster_user_entries_refused_total", &[], refused);
        w.family(
            "ringport_cluster_user_limit_local_total",
            "HELLOs whose per-user connection cap was checked against this node's connections only, because the broker was unreachable.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_cluster_user_limit_local_total",
            &[],
            load(&self.users_local_only),
        );
        w.family(
            "ringport_cluster_subscriptions",
            "Stream subjects this node is subscribed to (every stream with cluster.replicate_history, else rooms and users with members here; and broadcasts).",
            MetricType::Gauge,
        );
        w.sample(
            "ringport_cluster_subscriptions",
            &[],
            load(&self.subscriptions),
        );
    }
}

/// `true` at most once a second per `last` (wall ms of the last `true`): for warnings.
fn once_a_second(last: &AtomicU64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let was = last.load(Ordering::Relaxed);
    now >= was + 1_000
        && last
            .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(max_pending: u32) -> (Arc<ClusterBus>, BusQueue) {
        bus_with(max_pending, 0, 100)
    }

    fn bus_with(max_pending: u32, cap: u32, max_user_entries: u32) -> (Arc<ClusterBus>, BusQueue) {
        let config = ClusterConfig {
            servers: Some("nats://127.0.0.1:1".into()),
            node_id: Some("t".into()),
            max_pending,
            replicate_history: false,
            max_user_entries,
            ..ClusterConfig::default()
        };
        ClusterBus::new(&config, cap)
    }

    #[test]
    fn interest_counts_shards_and_changes_only_at_the_edges() {
        let (b, _q) = bus(4);
        let room = Target::Room("r".into());
        b.interest(&room, true);
        b.interest(&room, true);
        assert!(b.wanted().contains(&"ringport.room.r".to_owned()));
        b.interest(&room, false);
        assert!(b.wanted().contains(&"ringport.room.r".to_owned()));
        b.interest(&room, false);
        assert_eq!(b.wanted(), vec!["ringport.all".to_owned()]);
        // A stray leave is ignored.
        b.interest(&room, false);
        assert_eq!(b.wanted().len(), 1);
    }

    #[test]
    fn forward_is_bounded_and_counts_what_it_drops() {
        let (b, _q) = bus(2);
        let t = Target::Everyone;
        let p = Bytes::from_static(b"x");
        assert_eq!(
            b.forward(&t, &p, false, false, None, None),
            Err(DropReason::Unreachable)
        );
        b.connected.store(true, Ordering::Release);
        assert_eq!(b.forward(&t, &p, false, false, None, None), Ok(()));
        assert_eq!(b.forward(&t, &p, false, false, None, None), Ok(()));
        assert_eq!(
            b.forward(&t, &p, false, false, None, None),
            Err(DropReason::QueueFull)
        );
        let mut text = String::new();
        b.render(&mut text);
        assert!(text.contains("ringport_cluster_dropped_total{reason=\"unreachable\"} 1"));
        assert!(text.contains("ringport_cluster_dropped_total{reason=\"queue_full\"} 1"));
    }

    fn counts(node: &str, users: &[(&str, u32)]) -> users::Counts {
        users::Counts {
            node: node.into(),
            full: false,
            ask: false,
            users: users.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn without_a_per_user_cap_no_user_table_is_kept() {
        let (b, _q) = bus_with(4, 0, 100);
        b.connected.store(true, Ordering::Release);
        b.apply_counts(counts("other", &[("u", 3)]));
        assert_eq!(b.users.lock().unwrap().entries(), 0);
        assert_eq!(b.user_connections_elsewhere("u"), 0);
        b.user_count_changed("u");
        assert!(b.users_dirty.lock().unwrap().is_empty());
        // Nor is a check "against this node's connections only" counted while disconnected.
        b.connected.store(false, Ordering::Release);
        assert_eq!(b.user_connections_elsewhere("u"), 0);
        assert_eq!(b.users_local_only.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_user_table_is_bounded_by_max_user_entries_and_says_so() {
        let (b, _q) = bus_with(4, 5, 2);
        b.connected.store(true, Ordering::Release);
        b.apply_counts(counts("t", &[("mine", 9)]));
        assert_eq!(
            b.user_connections_elsewhere("mine"),
            0,
            "its own counts are ignored"
        );
        b.apply_counts(counts(
            "other",
            &[("u1", 1), ("u2", 2), ("u3", 3), ("u4", 4)],
        ));
        assert_eq!(b.user_connections_elsewhere("u2"), 2);
        assert_eq!(b.user_connections_elsewhere("u3"), 0);
        let mut text = String::new();
        b.render(&mut text);
        assert!(text.contains("ringport_cluster_user_entries 2\n"), "{text}");
        assert!(text.contains("ringport_cluster_user_entries_refused_total 2\n"));
        // A full table from that node replaces its entries: room again.
        let mut full = counts("other", &[("u3", 3)]);
        full.full = true;
        b.apply_counts(full);
        assert_eq!(b.user_connections_elsewhere("u3"), 3);
        assert_eq!(b.user_connections_elsewhere("u1"), 0);
    }
}
