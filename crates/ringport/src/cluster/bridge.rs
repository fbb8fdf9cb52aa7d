//! The bridge thread: one tokio runtime that owns the NATS connection, publishes what the
//! node forwards, keeps the node's subscriptions in line with its interest, and hands
//! messages from other nodes to the shards ([`Shared::publish_local`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt as _;
use ringport_io::EngineHandle;
use tokio::task::JoinHandle;

use super::members::{HEARTBEAT_MS, NODE_TTL_MS};
use super::{handover, owner, query, subject, users, BusQueue, ClusterBus, DropReason, Outbound};
use crate::config::ClusterConfig;
use crate::gateway::{GatewayHandler, PublishError, Shared};

/// Starts the bridge thread for `bus`. It runs until `shared` is gone.
pub(crate) fn start(
    config: &ClusterConfig,
    bus: Arc<ClusterBus>,
    queue: BusQueue,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) -> std::io::Result<()> {
    let config = config.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ringport-cluster".into())
        .spawn(move || {
            rt.block_on(run(config, bus, queue, shared, handle));
        })?;
    Ok(())
}

/// Reconnect pause after `attempts` failures: 100 ms doubling up to `max`.
fn backoff(attempts: usize, max: Duration) -> Duration {
    let shift = attempts.saturating_sub(1).min(16) as u32;
    Duration::from_millis(100u64 << shift).min(max)
}

async fn connect(config: &ClusterConfig, bus: &Arc<ClusterBus>) -> Result<Client, String> {
    let servers: Vec<async_nats::ServerAddr> = config
        .server_list()
        .unwrap_or_default()
        .iter()
        .map(|s| s.parse().map_err(|e| format!("cluster.servers {s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let max_delay = Duration::from_millis(config.reconnect_max_delay_ms);
    let events = Arc::clone(bus);
    let mut options = ConnectOptions::new()
        .name(format!("ringport {}", bus.node_id))
        .no_echo()
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
        .event_callback(move |event| {
            let bus = Arc::clone(&events);
            async move { on_event(&bus, &event) }
        })
        .require_tls(config.tls_required);
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.into());
    }
    if let Some(creds) = &config.credentials_file {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| format!("cluster.credentials_file {creds:?}: {e}"))?;
    }
    options
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to the cluster bus: {e}"))
}

fn on_event(bus: &ClusterBus, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            // A fresh connection gets a full heartbeat lifetime to echo.
            bus.echo_ms.store(bus.now_ms(), Ordering::Release);
            bus.connected.store(true, Ordering::Release);
            // What the other nodes said before may be stale: ask them all again.
            bus.users.lock().unwrap_or_else(|p| p.into_inner()).clear();
            bus.users_ask.store(true, Ordering::Release);
            bus.users_resync.store(true, Ordering::Release);
            bus.users_changed.notify_one();
            tracing::info!(node = %bus.node_id, "cluster: connected to the broker");
        }
        async_nats::Event::Disconnected => {
            if bus.connected.swap(false, Ordering::AcqRel) {
                bus.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            // Whatever was published meanwhile may be missed here.
            bus.handovers().lost_all();
            tracing::warn!(
                node = %bus.node_id,
                "cluster: lost the broker; delivering locally only and reconnecting"
            );
        }
        other => tracing::info!(node = %bus.node_id, event = %other, "cluster: broker event"),
    }
}

async fn run(
    config: ClusterConfig,
    bus: Arc<ClusterBus>,
    BusQueue(mut queue): BusQueue,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) {
    let client = match connect(&config, &bus).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(node = %bus.node_id, "{e}; this node runs alone");
            bus.mark_left();
            return;
        }
    };
    let _ = bus.client.set(client.clone());
    bus.echo_ms.store(bus.now_ms(), Ordering::Release);
    let publish_timeout = Duration::from_millis(config.publish_timeout_ms);
    let mut subscribed: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
    let node_tasks = subscribe_node_subjects(&client, &bus, &shared, &handle).await;
    sync_interest(&client, &bus, &shared, &handle, &mut subscribed).await;
    let mut announced = false;
    loop {
        tokio::select! {
            m = queue.recv() => match m {
                Some(m) if m.to_owner.is_some() => {
                    // Waits for the owner's answer on a task of its own: the queue goes on.
                    tokio::spawn(owner::forward(
                        client.clone(), Arc::clone(&bus), m, shared.clone(), handle.clone(),
                    ));
                }
                Some(m) => publish(&client, &bus, m, publish_timeout).await,
                None => break,
            },
            () = bus.leave_requested.notified(), if !announced => {
                // Everything this node numbered is queued (the caller's barrier): publish it,
                // then say which sequence was the last.
                while let Ok(m) = queue.try_recv() {
                    if m.to_owner.is_some() {
                        tokio::spawn(owner::forward(
                            client.clone(), Arc::clone(&bus), m, shared.clone(), handle.clone(),
                        ));
                    } else {
                        publish(&client, &bus, m, publish_timeout).await;
                    }
                }
                announce_leave(&client, &bus).await;
                announced = true;
            }
            () = bus.users_changed.notified() => {
                users::publish(&client, &bus, &shared, publish_timeout).await;
            }
            () = bus.interest_changed.notified() => {
                sync_interest(&client, &bus, &shared, &handle, &mut subscribed).await;
            }
            _ = heartbeat.tick(), if !announced => {
                let alive = format!("alive {}", bus.node_id);
                let sent = client.publish(subject::nodes(&bus.prefix), alive.into());
                let _ = tokio::time::timeout(publish_timeout, sent).await;
                // The broker's liveness: a round trip through it (the node's own heartbeat
                // never comes back: the connection is `no_echo`), waited for on a task of
                // its own.
                let (client, bus) = (client.clone(), Arc::clone(&bus));
                tokio::spawn(async move {
                    let answered =
                        broker_round_trip(&client, &bus, Duration::from_millis(HEARTBEAT_MS)).await;
                    if answered {
                        bus.echo_ms.store(bus.now_ms(), Ordering::Release);
                    }
                });
            }
            _ = tick.tick() => {
                if shared.strong_count() == 0 {
                    break;
                }
                let now = bus.now_ms();
                let linked = client.connection_state() == async_nats::connection::State::Connected;
                // Connected but deaf: the broker has not answered a heartbeat's probe for a
                // node's lifetime, so it processes nothing (SIGSTOPped, wedged, partitioned
                // behind a live TCP connection). Treated as disconnected: publishes are
                // dropped and counted, publishers are told.
                let deaf = now.saturating_sub(bus.echo_ms.load(Ordering::Acquire)) > NODE_TTL_MS;
                let up = linked && !deaf;
                let was = bus.connected.swap(up, Ordering::AcqRel);
                if was && !up {
                    bus.disconnects.fetch_add(1, Ordering::Relaxed);
                    bus.handovers().lost_all();
                    if linked {
                        tracing::warn!(
                            node = %bus.node_id,
                            "cluster: the broker has not delivered this node's own heartbeat for {NODE_TTL_MS} ms; delivering locally only until it does"
                        );
                    }
                } else if !was && up && linked {
                    tracing::info!(node = %bus.node_id, "cluster: the broker delivers again");
                }
                if bus.users_resync.load(Ordering::Acquire) {
                    users::publish(&client, &bus, &shared, publish_timeout).await;
                }
                for id in bus.members().expire(now) {
                    bus.users.lock().unwrap_or_else(|p| p.into_inner()).forget(&id);
                    tracing::warn!(
                        node = %bus.node_id, gone = %id,
                        "cluster: node not heard from for {NODE_TTL_MS} ms; its streams move to the live nodes, in new epochs"
                    );
                }
                for id in bus.handovers().expire(now) {
                    tracing::warn!(
                        node = %bus.node_id, gone = %id,
                        "cluster: not every message of the node that left arrived here; its streams start new epochs here"
                    );
                }
            }
        }
    }
    // Leaving: the other nodes take over this node's streams at once.
    if !announced {
        announce_leave(&client, &bus).await;
    }
    for task in subscribed.into_values().chain(node_tasks) {
        task.abort();
    }
    bus.connected.store(false, Ordering::Release);
}

/// Publishes `leaving ID NODE_EPOCH LAST_SEQ EPOCH...` (`handover.rs`), flushes it, and lets
/// [`ClusterBus::leave`] return.
async fn announce_leave(client: &Client, bus: &ClusterBus) {
    let mut text = format!(
        "leaving {} {} {}",
        bus.node_id,
        bus.epoch.load(Ordering::Relaxed),
        bus.numbered.load(Ordering::Acquire)
    );
    let epochs = bus
        .adopted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for e in std::iter::once(bus.epoch.load(Ordering::Relaxed)).chain(epochs) {
        text.push_str(&format!(" {e}"));
    }
    let _ = client
        .publish(subject::nodes(&bus.prefix), text.into())
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    tracing::info!(node = %bus.node_id, "cluster: leaving announced; the other nodes take this node's streams over");
    bus.mark_left();
}

/// Another node said it leaves: forget it and, if every message it numbered arrived here,
/// continue its epochs (`handover.rs`).
fn node_left(bus: &ClusterBus, shared: &Weak<Shared>, words: &str) {
    let mut it = words.split(' ');
    let Some(id) = it.next() else { return };
    bus.members().left(id);
    bus.users
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .forget(id);
    let node_epoch = it.next().and_then(|w| w.parse::<u32>().ok());
    let last = it.next().and_then(|w| w.parse::<u64>().ok());
    let epochs: Vec<u32> = it.filter_map(|w| w.parse().ok()).collect();
    let (Some(node_epoch), Some(last)) = (node_epoch, last) else {
        tracing::info!(node = %bus.node_id, gone = %id, "cluster: node left");
        return;
    };
    let now = bus.now_ms();
    let decision = bus.handovers().left(id, node_epoch, last, epochs, now);
    match decision {
        handover::Decision::Adopt(epochs) => adopt(bus, shared, id, &epochs),
        handover::Decision::Wait => {}
        handover::Decision::Refuse => tracing::warn!(
            node = %bus.node_id, gone = %id,
            "cluster: node left, but not every message it numbered arrived here; its streams start new epochs here"
        ),
    }
}

/// Continues the replicas in `epochs` (numbered by `id`, which left) when this node owns them.
fn adopt(bus: &ClusterBus, shared: &Weak<Shared>, id: &str, epochs: &[u32]) {
    if let Some(shared) = shared.upgrade() {
        for e in epochs {
            shared.sink.adopt_epoch(*e);
        }
        *bus.adopted.lock().unwrap_or_else(|p| p.into_inner()) = shared.sink.adopted_epochs();
    }
    tracing::info!(node = %bus.node_id, gone = %id, ?epochs, "cluster: node left; its streams go on in its epochs here");
}

/// Subscribes to the heartbeats of every node, to this node's owner inbox and to the
/// cluster-wide count queries.
async fn subscribe_node_subjects(
    client: &Client,
    bus: &Arc<ClusterBus>,
    shared: &Weak<Shared>,
    handle: &EngineHandle<GatewayHandler>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    match client.subscribe(subject::nodes(&bus.prefix)).await {
        Ok(mut sub) => {
            let bus = Arc::clone(bus);
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let text = String::from_utf8_lossy(&msg.payload);
                    let now = bus.now_ms();
                    match text.split_once(' ') {
                        Some(("alive", id)) => {
                            if id == bus.node_id {
                                bus.echo_ms.store(now, Ordering::Release);
                            }
                            if bus.members().heard(id, now) {
                                // The newcomer learns this node's connections per user.
                                bus.users_resync.store(true, Ordering::Release);
                                tracing::info!(node = %bus.node_id, joined = %id, "cluster: node joined");
                            }
                        }
                        Some(("leaving", words)) => node_left(&bus, &shared, words),
                        _ => {}
                    }
                }
            }));
        }
        Err(e) => {
            tracing::error!(node = %bus.node_id, "cluster: cannot subscribe to heartbeats: {e}")
        }
    }
    let (c, b, s, h) = (
        client.clone(),
        Arc::clone(bus),
        shared.clone(),
        handle.clone(),
    );
    let inbox = subject::owner_inbox(&bus.prefix, &bus.node_id);
    serve_on(client, bus, inbox, "the owner inbox", &mut tasks, |sub| {
        owner::serve(c, sub, b, s, h)
    })
    .await;
    if bus.track_users {
        let b = Arc::clone(bus);
        let conns = subject::conns(&bus.prefix);
        serve_on(client, bus, conns, "user counts", &mut tasks, |sub| {
            users::receive(sub, b)
        })
        .await;
    }
    let (c, b, s, h) = (
        client.clone(),
        Arc::clone(bus),
        shared.clone(),
        handle.clone(),
    );
    let queries = subject::query(&bus.prefix);
    serve_on(client, bus, queries, "count queries", &mut tasks, |sub| {
        query::serve(c, sub, b, s, h)
    })
    .await;
    tasks
}

/// Subscribes to `subject` and serves it with `serve` on a task of its own (in `tasks`).
async fn serve_on<F, Fut>(
    client: &Client,
    bus: &ClusterBus,
    subject: String,
    what: &str,
    tasks: &mut Vec<JoinHandle<()>>,
    serve: F,
) where
    F: FnOnce(async_nats::Subscriber) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match client.subscribe(subject).await {
        Ok(sub) => tasks.push(tokio::spawn(serve(sub))),
        Err(e) => tracing::error!(node = %bus.node_id, "cluster: cannot subscribe to {what}: {e}"),
    }
}

/// Serves the requests on `sub` (messages with a reply subject) until it ends or the gateway
/// is gone: `answer` takes each request in arrival order with the gateway, does what must
/// happen in that order, and returns the future of its answer (or `None`: not answered),
/// which runs on a task of its own and is published on the request's reply subject.
pub(super) async fn serve_requests<F, Fut>(
    client: Client,
    mut sub: async_nats::Subscriber,
    bus: &ClusterBus,
    shared: Weak<Shared>,
    mut answer: F,
) where
    F: FnMut(&async_nats::Message, Arc<Shared>) -> Option<Fut>,
    Fut: std::future::Future<Output = Option<bytes::Bytes>> + Send + 'static,
{
    while let Some(msg) = sub.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Some(body) = answer(&msg, shared) else {
            continue;
        };
        let (client, node) = (client.clone(), bus.node_id.clone());
        tokio::spawn(async move {
            let Some(body) = body.await else { return };
            if let Err(e) = client.publish(reply, body).await {
                tracing::debug!(%node, "cluster: answering a request: {e}");
            }
        });
    }
}

async fn publish(client: &Client, bus: &ClusterBus, m: Outbound, timeout: Duration) {
    if !bus.connected.load(Ordering::Acquire) {
        bus.dropped(DropReason::Unreachable);
        return;
    }
    let headers = owner::headers(bus, &m);
    let sent = client.publish_with_headers(m.subject, headers, m.payload);
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(())) => {
            bus.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(_)) => bus.dropped(DropReason::Unreachable),
        Err(_) => bus.dropped(DropReason::Timeout),
    }
}

/// Subscribes to every subject the node now wants and unsubscribes from the rest.
async fn sync_interest(
    client: &Client,
    bus: &Arc<ClusterBus>,
    shared: &Weak<Shared>,
    handle: &EngineHandle<GatewayHandler>,
    subscribed: &mut HashMap<String, JoinHandle<()>>,
) {
    let wanted = bus.wanted();
    subscribed.retain(|subject, task| {
        let keep = wanted.contains(subject);
        if !keep {
            // Dropping the subscriber (with its task) unsubscribes.
            task.abort();
        }
        keep
    });
    for subject in wanted {
        if subscribed.contains_key(&subject) {
            continue;
        }
        match client.subscribe(subject.clone()).await {
            Ok(sub) => {
                // Every message one poll takes off the subscription rings each shard once.
                let task = tokio::spawn(ringport_io::batched(receive(
                    sub,
                    Arc::clone(bus),
                    shared.clone(),
                    handle.clone(),
                )));
                subscribed.insert(subject, task);
            }
            Err(e) => {
                tracing::warn!(node = %bus.node_id, %subject, "cluster: subscribe failed: {e}");
                // Retried at the next change of interest, or shortly.
                sync_interest_later(bus);
            }
        }
    }
    // The broker has every SUB once it answered a round trip sent after them (a flush only
    // writes to the socket): what is published after the count below moves reaches this
    // node. A round trip not answered in time (a slow broker, a loaded machine) leaves the
    // count where it was and is tried again, so the gauge never claims a subscription the
    // broker may not have processed yet.
    if broker_round_trip(client, bus, Duration::from_secs(2)).await {
        bus.subscriptions
            .store(subscribed.len() as u64, Ordering::Relaxed);
    } else {
        tracing::debug!(node = %bus.node_id, "cluster: no round trip through the broker after subscribing; again");
        sync_interest_later(bus);
    }
}

/// A round trip through the broker on this node's connection, at most `timeout`: a request
/// to a subject nobody serves is answered "no responders" by the broker itself, once it has
/// processed everything this connection sent before it (SUBs included). `true` if answered.
async fn broker_round_trip(client: &Client, bus: &ClusterBus, timeout: Duration) -> bool {
    let probe = async_nats::Request::new().timeout(Some(timeout));
    match client
        .send_request(subject::echo(&bus.prefix, &bus.node_id), probe)
        .await
    {
        Ok(_) => true,
        Err(e) => e.kind() == async_nats::RequestErrorKind::NoResponders,
    }
}

/// Runs [`sync_interest`] again in a quarter of a second (a subscribe or flush failed: no
/// tight retry loop while the broker is away).
fn sync_interest_later(bus: &Arc<ClusterBus>) {
    let bus = Arc::clone(bus);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bus.interest_changed.notify_one();
    });
}

/// Delivers every message of one subscription on this node: numbered by its stream's owner
/// (kept in this node's replica, delivered with the owner's epoch and offset).
async fn receive(
    mut sub: async_nats::Subscriber,
    bus: Arc<ClusterBus>,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) {
    while let Some(msg) = sub.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(target) = subject::target(&bus.prefix, msg.subject.as_str()) else {
            continue;
        };
        let h = msg.headers.as_ref();
        let message = owner::message(target, h, msg.payload.clone());
        let done = match owner::numbering(h) {
            Some((epoch, offset)) => shared.publish_numbered(&handle, message, epoch, offset),
            None => shared.publish_local(&handle, message),
        };
        let seq = owner::sequence(h);
        match done {
            Ok(_) => {
                bus.received.fetch_add(1, Ordering::Relaxed);
                if let Some((origin, node_epoch, seq)) = seq {
                    let adopted = bus.handovers().received(origin, node_epoch, seq);
                    if let Some(epochs) = adopted {
                        adopt(&bus, &Arc::downgrade(&shared), origin, &epochs);
                    }
                }
            }
            Err(e) => {
                if let Some((origin, node_epoch, _)) = seq {
                    bus.handovers().lost(origin, node_epoch);
                }
                match e {
                    PublishError::Busy(_) => bus.dropped(DropReason::Backlog),
                    PublishError::Rejected(e) => {
                        tracing::warn!(node = %bus.node_id, "cluster: refused a message from the bus: {e}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_millis(5_000);
        assert_eq!(backoff(1, max), Duration::from_millis(100));
        assert_eq!(backoff(2, max), Duration::from_millis(200));
        assert_eq!(backoff(4, max), Duration::from_millis(800));
        assert_eq!(backoff(30, max), max);
    }
}
