//! Several gateways over one NATS broker (`--cluster`): pushes, user pushes, broadcasts and
//! client PUBLISHes made on one node reach members on every node; a resume on another node
//! is answered honestly; with the broker gone, local delivery goes on and the drops are
//! counted, and after it returns the nodes subscribe again.
//!
//! Each test starts its own `nats-server` (Debian package; .ci/run installs it) on a free
//! loopback port and in-process gateways on port 0.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{member, node, node_with, nothing_more, push, pushes, scrape, Broker};
use common::gateway::{metric, test_config, token, Client, TestServer, WAIT};
use ringport::config::Config;
use ringport_proto::{Frame, ResumeOutcome, ResumePoint, Status, StreamName};

#[test]
fn messages_made_on_any_node_reach_members_on_every_node_once_and_in_order() {
    let broker = Broker::start(None);
    // Routing by interest: each node receives only the streams it has members of.
    let nodes: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|id| node_with(&broker, id, |c| c.cluster.replicate_history = false))
        .collect();
    // One member of room "r" per node; user "u" has a connection on b and c.
    let mut members: Vec<Client> = nodes
        .iter()
        .zip(["ua", "u", "u"])
        .map(|(n, user)| member(n, user, "r"))
        .collect();
    // Subscribed: the room, the user and broadcasts (the broker has the SUBs: flushed).
    for (n, want) in nodes.iter().zip([3, 3, 3]) {
        n.wait_metric(&format!("ringport_cluster_subscriptions {want}"));
    }
    // Every node has heard the other two, so all agree on each stream's owner (until then a
    // node may number a stream itself: several epochs at start-up, docs/architecture.md).
    for n in &nodes {
        n.wait_metric("ringport_cluster_nodes 3");
    }

    for i in 0..20 {
        let answer = push(&nodes[i % 3], "/v1/push/room/r", &format!("m{i}"));
        assert!(!answer.contains("warning"), "{answer}");
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for c in &mut members {
        // Pushes from different nodes may interleave differently per node, but each node
        // delivers every message once, in its offset order.
        let mut got = pushes(c, 20);
        got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
        assert_eq!(got, want);
    }

    push(&nodes[0], "/v1/push/user/u", "dm");
    push(&nodes[0], "/v1/broadcast", "all");
    assert_eq!(pushes(&mut members[0], 1), ["all"]);
    for c in &mut members[1..] {
        let mut got = pushes(c, 2);
        got.sort();
        assert_eq!(got, ["all", "dm"]);
    }

    // A client PUBLISH on b reaches the members on a and c (and on b itself).
    members[1].publish("r", 1, b"from-b");
    for c in &mut members {
        let got = loop {
            match c.recv() {
                Frame::Push(p) => break p,
                Frame::PublishAck(_) => continue,
                other => panic!("expected PUSH, got {other:?}"),
            }
        };
        assert_eq!(&got.payload[..], b"from-b");
    }
    for c in &mut members {
        nothing_more(c);
    }
    let body = scrape(&nodes[0]);
    assert!(
        metric(&body, "ringport_cluster_forwarded_total") >= 8,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "ringport_cluster_dropped_total{reason=\"unreachable\"}"
        ),
        0
    );

    // The last member of "r" on c (also user u's only connection there) leaves: c
    // unsubscribes from the room and the user, and keeps broadcasts.
    drop(members.pop());
    nodes[2].wait_metric("ringport_cluster_subscriptions 1");
    nodes[1].wait_metric("ringport_cluster_subscriptions 3");
}

#[test]
fn every_node_delivers_one_sequence_per_stream_the_same_everywhere() {
    let broker = Broker::start(None);
    let nodes: Vec<TestServer> = ["a", "b", "c"].iter().map(|id| node(&broker, id)).collect();
    for n in &nodes {
        n.wait_metric("ringport_cluster_nodes 3");
    }
    // Two members per node, in rooms owned by different nodes (rendezvous spreads them).
    let rooms = ["r1", "r2", "r3", "r4"];
    let mut members: Vec<Client> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut c = n.welcomed(&token(&format!("u{i}"), &rooms));
        for (k, room) in rooms.iter().enumerate() {
            assert_eq!(c.join(k as u32 + 1, room), Status::OK);
        }
        members.push(c);
    }
    for n in &nodes {
        n.wait_metric("ringport_cluster_subscriptions 3");
    }
    // Pushes through every node, client PUBLISHes from every node.
    let mut sent = 0;
    for i in 0..24 {
        let room = rooms[i % rooms.len()];
        let answer = push(
            &nodes[i % 3],
            &format!("/v1/push/room/{room}"),
            &format!("p{i}"),
        );
        assert!(!answer.contains("warning"), "{answer}");
        sent += 1;
    }
    for (i, c) in members.iter_mut().enumerate() {
        c.publish(rooms[i % rooms.len()], 1, format!("c{i}").as_bytes());
        sent += 1;
    }
    // Every member gets every message once, and all members see each stream with the
    // same (epoch, offset) for the same message, offsets increasing by one.
    let mut views = Vec::new();
    for c in &mut members {
        let mut got = Vec::new();
        while got.len() < sent {
            match c.recv() {
                Frame::Push(p) => got.push((p.stream.to_string(), p.epoch, p.offset, p.payload)),
                Frame::PublishAck(a) => assert_eq!(a.status, Status::OK),
                other => panic!("expected PUSH, got {other:?}"),
            }
        }
        let mut by_stream: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for (stream, epoch, offset, payload) in got {
            by_stream
                .entry(stream)
                .or_default()
                .push((epoch, offset, payload));
        }
        for list in by_stream.values() {
            for w in list.windows(2) {
                assert_eq!(w[0].0, w[1].0, "one epoch per stream");
                assert_eq!(w[0].1 + 1, w[1].1, "no hole, no duplicate: {list:?}");
            }
        }
        views.push(by_stream);
    }
    for v in &views[1..] {
        assert_eq!(v, &views[0], "every node numbers every stream the same");
    }
    for c in &mut members {
        let extra = c.until_pong(77);
        // Late PUBLISH_ACKs are fine; nothing else may follow.
        assert!(
            extra.iter().all(|f| matches!(f, Frame::PublishAck(_))),
            "unexpected frames: {extra:?}"
        );
    }
}

/// Nodes `a` and `b` that see each other, a client of user "u" in room "r" on `a` (its
/// session and the first PUSH it got) and a member of "r" on `b` that got the same PUSH
/// with the same (epoch, offset): one sequence for the stream on both nodes.
fn cut_from_a(
    broker: &Broker,
    history_on_b: u32,
) -> (TestServer, TestServer, u64, ringport_proto::Push, Client) {
    let a = node(broker, "a");
    let b = node_with(broker, "b", |c| {
        c.history.max_messages_per_stream = history_on_b
    });
    a.wait_metric("ringport_cluster_nodes 2");
    b.wait_metric("ringport_cluster_nodes 2");
    let mut on_a = a.client();
    let w = on_a.welcome(&token("u", &["r"]));
    assert_eq!(on_a.join(1, "r"), Status::OK);
    let mut keep_b = member(&b, "v", "r");
    a.wait_metric("ringport_cluster_subscriptions 3");
    b.wait_metric("ringport_cluster_subscriptions 3");
    push(&a, "/v1/push/room/r", "one");
    let first = on_a.push();
    let seen_on_b = keep_b.push();
    assert_eq!(
        (seen_on_b.epoch, seen_on_b.offset, &seen_on_b.payload[..]),
        (first.epoch, first.offset, &b"one"[..]),
        "both nodes number the stream the same"
    );
    drop(on_a);
    (a, b, w.session_id, first, keep_b)
}

/// Resumes room "r" from `first` on `n` for session `session`; the RESUME_RESULT.
fn resume_on(
    n: &TestServer,
    session: u64,
    first: &ringport_proto::Push,
) -> (Client, ringport_proto::ResumeResult) {
    let mut c = n.client();
    c.hello_resume(
        &token("u", &["r"]),
        session,
        vec![ResumePoint {
            stream: StreamName::Room("r".into()),
            epoch: first.epoch,
            last_offset: first.offset,
        }],
    );
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    match c.recv() {
        Frame::ResumeResult(r) => (c, r),
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    }
}

#[test]
fn a_client_cut_from_one_node_resumes_on_another_with_no_gap() {
    let broker = Broker::start(None);
    let (a, b, session, first, mut keep_b) = cut_from_a(&broker, 1000);
    // Missed while away, pushed through either node.
    push(&b, "/v1/push/room/r", "two");
    push(&a, "/v1/push/room/r", "three");
    assert_eq!(pushes(&mut keep_b, 2), ["two", "three"]);

    let (mut on_b, r) = resume_on(&b, session, &first);
    assert_eq!(r.outcome, ResumeOutcome::Resumed, "{r:?}");
    assert_eq!((r.old_epoch, r.new_epoch), (first.epoch, first.epoch));
    for (k, want) in ["two", "three"].iter().enumerate() {
        let p = on_b.push();
        assert_eq!(&p.payload[..], want.as_bytes());
        assert_eq!(
            (p.epoch, p.offset),
            (first.epoch, first.offset + 1 + k as u64)
        );
    }
    nothing_more(&mut on_b);
}

#[test]
fn a_resume_on_another_node_past_its_trimmed_history_is_a_gap_with_the_right_range() {
    let broker = Broker::start(None);
    // b keeps 2 messages per stream.
    let (a, b, session, first, mut keep_b) = cut_from_a(&broker, 2);
    for i in 0..5 {
        push(&a, "/v1/push/room/r", &format!("m{i}"));
    }
    assert_eq!(pushes(&mut keep_b, 5).len(), 5);

    let (mut on_b, r) = resume_on(&b, session, &first);
    assert_eq!(r.outcome, ResumeOutcome::Gap, "{r:?}");
    // Offsets first+1 ..= first+3 are gone; first+4 and first+5 follow.
    assert_eq!(
        (r.missing_from, r.missing_to),
        (first.offset + 1, first.offset + 4),
        "{r:?}"
    );
    assert_eq!(pushes(&mut on_b, 2), ["m3", "m4"]);
    nothing_more(&mut on_b);
}

#[test]
fn with_the_broker_gone_local_delivery_goes_on_and_drops_are_counted() {
    let broker = Broker::start(None);
    let port = broker.port;
    let a = node(&broker, "a");
    let b = node(&broker, "b");
    let mut on_a = member(&a, "ua", "r");
    let mut on_b = member(&b, "ub", "r");
    a.wait_metric("ringport_cluster_subscriptions 3");
    b.wait_metric("ringport_cluster_subscriptions 3");
    push(&a, "/v1/push/room/r", "before");
    assert_eq!(pushes(&mut on_a, 1), ["before"]);
    assert_eq!(pushes(&mut on_b, 1), ["before"]);

    // Frozen broker: the nodes notice (unanswered pings) and stop handing it messages;
    // pushes are answered at once and reach local members.
    broker.signal("-STOP");
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 0");
    let started = Instant::now();
    for i in 0..50 {
        let answer = push(&a, "/v1/push/room/r", &format!("s{i}"));
        assert!(
            answer.contains("could not reach the other nodes"),
            "{answer}"
        );
    }
    assert!(
        started.elapsed() < WAIT,
        "pushes were not held up by the broker"
    );
    let got = pushes(&mut on_a, 50);
    assert_eq!(got, (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>());
    // A client PUBLISH says so too: an ERROR just before its PUBLISH_ACK OK.
    let (warned, _) = publish_answer(&mut on_a, "r", 1, "client");
    assert!(
        warned,
        "the PUBLISH answer did not say it stayed on this node"
    );
    let body = scrape(&a);
    assert!(
        metric(
            &body,
            "ringport_cluster_dropped_total{reason=\"unreachable\"}"
        ) >= 50,
        "{body}"
    );
    assert!(metric(&body, "ringport_cluster_disconnects_total") >= 1);

    // Killed and started again on the same port: both nodes reconnect and subscribe again.
    broker.signal("-CONT");
    drop(broker);
    let broker = Broker::start(Some(port));
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 1");
    b.wait_metric("ringport_cluster_connected{node=\"b\"} 1");
    // Re-subscription is the client's: poll with fresh pushes until one crosses to each
    // member. A push may arrive after the PONG that follows it (it goes round the broker),
    // so one sent in an earlier round counts too.
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    let (mut got_a, mut got_b) = (false, false);
    loop {
        push(&a, "/v1/push/room/r", &format!("after{i}"));
        // The stream's owner may be b: then a's own members get it once it went round.
        let got = |c: &mut Client| {
            c.until_pong(1000 + i)
                .iter()
                .any(|f| matches!(f, Frame::Push(p) if p.payload.starts_with(b"after")))
        };
        got_a |= got(&mut on_a);
        got_b |= got(&mut on_b);
        if got_a && got_b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no push crossed after the broker came back"
        );
        std::thread::sleep(Duration::from_millis(50));
        i += 1;
    }
    drop(broker);
}

#[test]
fn the_cluster_metrics_are_documented() {
    let broker = Broker::start(None);
    let a = node(&broker, "a");
    let body = scrape(&a);
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let mut families = 0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# HELP ringport_cluster_") else {
            continue;
        };
        let (name, help) = rest.split_once(' ').unwrap();
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `ringport_cluster_{name}` |")))
            .unwrap_or_else(|| panic!("docs/operations.md lacks ringport_cluster_{name}"));
        assert!(
            row.ends_with(&format!("| {help} |")),
            "HELP of {name}: {row}"
        );
        families += 1;
    }
    assert_eq!(families, 12);
    // A single node has none of them.
    let single = TestServer::start(test_config());
    assert!(!scrape(&single).contains("ringport_cluster_"));
}

/// Rooms (named `prefix0`, `prefix1`, ...) whose stream `n` numbers itself: a push with
/// `?wait=delivered` is numbered on the node it arrives at, so its epoch is `n`'s, and a
/// plain push carries the epoch of its stream's owner.
fn rooms_owned_by(n: &TestServer, prefix: &str, count: usize) -> Vec<String> {
    let epoch_of = |answer: &str| {
        let v: serde_json::Value = serde_json::from_str(answer).unwrap();
        v["epoch"].as_u64().unwrap()
    };
    let r = n.http(
        "POST",
        "/v1/push/room/probe?wait=delivered",
        "{\"payload\":\"p\"}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let own = epoch_of(&r.body);
    let owned: Vec<String> = (0..64)
        .map(|i| format!("{prefix}{i}"))
        .filter(|room| epoch_of(&push(n, &format!("/v1/push/room/{room}"), "probe")) == own)
        .take(count)
        .collect();
    assert_eq!(owned.len(), count, "rendezvous gives every node some rooms");
    owned
}

/// `n`'s `ringport_cluster_*` samples on one line (for failure messages).
fn cluster_lines(n: &TestServer) -> String {
    scrape(n)
        .lines()
        .filter(|l| l.starts_with("ringport_cluster_"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Publishes `payload` as `seq` from `c` and reads up to its PUBLISH_ACK: whether an ERROR
/// (the message reached this node's members only) came first, and the PUSHes seen meanwhile.
fn publish_answer(c: &mut Client, room: &str, seq: u64, payload: &str) -> (bool, Vec<String>) {
    c.publish(room, seq, payload.as_bytes());
    let mut warned = false;
    let mut seen = Vec::new();
    loop {
        match c.recv() {
            Frame::Error { code, text } => {
                assert_eq!(code, Status::INTERNAL, "{text}");
                assert!(
                    text.starts_with(&format!(
                        "PUBLISH seq {seq} to room {room}: delivered on this node only"
                    )),
                    "{text}"
                );
                warned = true;
            }
            Frame::PublishAck(a) if a.seq == seq => {
                assert_eq!(a.status, Status::OK);
                return (warned, seen);
            }
            Frame::Push(p) => seen.push(String::from_utf8(p.payload.to_vec()).unwrap()),
            other => panic!("expected PUBLISH_ACK {seq}, got {other:?}"),
        }
    }
}

#[test]
fn a_frozen_broker_is_noticed_and_told_to_publishers() {
    frozen_broker(false);
}

#[test]
fn a_frozen_broker_is_told_to_publishers_and_a_remote_resume_gets_the_gap() {
    frozen_broker(true);
}

/// Freezes the broker for ~5 s under client PUBLISHes on node a; with `recovery`, also checks
/// that messages cross again after SIGCONT and that a client cut from b resumes with a GAP.
fn frozen_broker(recovery: bool) {
    // The nodes' log lines (info and up) go to the test's captured output: shown on failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ringport=info")
        .with_test_writer()
        .try_init();
    let broker = Broker::start(None);
    // Interest routing, so re-subscribing after the freeze is what makes messages cross.
    let tweak = |c: &mut Config| {
        c.cluster.replicate_history = false;
        c.rooms.publish_rate_per_sec = 1_000;
        c.rooms.publish_burst = 1_000;
    };
    let a = node_with(&broker, "a", tweak);
    let b = node_with(&broker, "b", tweak);
    a.wait_metric("ringport_cluster_nodes 2");
    b.wait_metric("ringport_cluster_nodes 2");
    // Rooms a numbers, so b's members depend on the bus for them.
    let owned = rooms_owned_by(&a, "f", 2);
    let (room, late) = (owned[0].as_str(), owned[1].as_str());
    let mut publisher = member(&a, "pa", room);
    let mut on_a = member(&a, "la", room);
    let mut keep_b = member(&b, "kb", room);
    let mut cut_b = b.client();
    let w = cut_b.welcome(&token("cb", &[room]));
    assert_eq!(cut_b.join(1, room), Status::OK);
    // Subscribed: the room, two users and broadcasts on each node.
    a.wait_metric("ringport_cluster_subscriptions 4");
    b.wait_metric("ringport_cluster_subscriptions 4");
    let received = metric(&scrape(&b), "ringport_cluster_received_total");
    let (warned, _) = publish_answer(&mut publisher, room, 1, "before");
    assert!(!warned);
    assert_eq!(pushes(&mut on_a, 1), ["before"]);
    // Bounded poll on b's counter first: if "before" never crosses, the nodes' counters say
    // where it stopped instead of a read timing out.
    let deadline = Instant::now() + WAIT;
    while metric(&scrape(&b), "ringport_cluster_received_total") <= received {
        assert!(
            Instant::now() < deadline,
            "\"before\" did not reach b; a: {}; b: {}",
            cluster_lines(&a),
            cluster_lines(&b)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pushes(&mut keep_b, 1), ["before"]);
    let last = cut_b.push();
    drop(cut_b);

    // Frozen for about 5 s while client PUBLISHes go on every 50 ms.
    broker.signal("-STOP");
    let frozen = Instant::now();
    let mut sent = Vec::new();
    let mut warned_after_cut = 0;
    let mut late_b = None;
    let mut seq = 2;
    while frozen.elapsed() < Duration::from_secs(5) || warned_after_cut < 20 {
        assert!(
            frozen.elapsed() < WAIT,
            "after {} publishes, {warned_after_cut} answered after the cut; a's metrics: {}",
            sent.len(),
            cluster_lines(&a)
        );
        let cut = scrape(&a).contains("ringport_cluster_connected{node=\"a\"} 0");
        let payload = format!("s{seq}");
        let (warned, _) = publish_answer(&mut publisher, room, seq, &payload);
        if cut {
            // Once the node knows the broker is gone, every answer says so.
            assert!(
                warned,
                "PUBLISH {seq} after the cut was answered without an ERROR"
            );
            warned_after_cut += 1;
            if late_b.is_none() {
                // Interest that changes while b is cut off too.
                late_b = Some(member(&b, "lb", late));
            }
        }
        sent.push(payload);
        seq += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Local members lost nothing, in order.
    assert_eq!(pushes(&mut on_a, sent.len()), sent);
    let body = scrape(&a);
    let dropped = metric(
        &body,
        "ringport_cluster_dropped_total{reason=\"unreachable\"}",
    );
    assert!(
        dropped >= warned_after_cut,
        "{dropped} < {warned_after_cut}"
    );
    if !recovery {
        broker.signal("-CONT");
        a.wait_metric("ringport_cluster_connected{node=\"a\"} 1");
        return;
    }

    // Back: both nodes reconnect and re-subscribe, and new messages cross again.
    broker.signal("-CONT");
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 1");
    b.wait_metric("ringport_cluster_connected{node=\"b\"} 1");
    let both = || format!("a: {}; b: {}", cluster_lines(&a), cluster_lines(&b));
    let crossed = until_crossed(&mut keep_b, &mut seq, both, |seq| {
        let payload = format!("after{seq}");
        publish_answer(&mut publisher, room, seq, &payload);
        payload
    });
    // The room joined while cut off is served too (b subscribed to it on reconnect).
    let mut late_b = late_b.unwrap();
    until_crossed(&mut late_b, &mut seq, both, |_| {
        push(&a, &format!("/v1/push/room/{late}"), "late");
        "late".to_owned()
    });

    // The client cut from b resumes there: what b never received is a GAP, never a hole.
    let mut again = b.client();
    again.hello_resume(
        &token("cb", &[room]),
        w.session_id,
        vec![ResumePoint {
            stream: StreamName::Room(room.into()),
            epoch: last.epoch,
            last_offset: last.offset,
        }],
    );
    assert!(matches!(again.recv(), Frame::Welcome(_)));
    let r = match again.recv() {
        Frame::ResumeResult(r) => r,
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    };
    assert_eq!(r.outcome, ResumeOutcome::Gap, "{r:?}");
    assert_eq!(r.old_epoch, last.epoch);
    assert_eq!(r.missing_from, last.offset + 1, "{r:?}");
    assert!(r.missing_to <= crossed.offset, "{r:?} {crossed:?}");
    // Then the messages b holds, contiguous, up to the one that crossed (and maybe later).
    let mut next = r.missing_to;
    loop {
        let p = again.push();
        assert_eq!(p.offset, next, "contiguous after the gap");
        next += 1;
        if p.offset == crossed.offset {
            break;
        }
    }
}

/// Sends with `send(seq)` (which returns the payload sent) every 100 ms until `c` receives
/// one of the payloads sent, for at most [`WAIT`]; the PUSH that crossed. A payload may arrive
/// after the PONG that follows it (crossing takes two bridges and the broker; the PONG one
/// shard), so a payload sent earlier counts too. On failure the panic message carries the
/// other pushes seen and `state()` (the nodes' cluster metrics).
fn until_crossed(
    c: &mut Client,
    seq: &mut u64,
    state: impl Fn() -> String,
    mut send: impl FnMut(u64) -> String,
) -> ringport_proto::Push {
    let deadline = Instant::now() + WAIT;
    let mut sent = Vec::new();
    let mut other = Vec::new();
    loop {
        sent.push(send(*seq));
        let seen = c.until_pong(*seq);
        *seq += 1;
        for f in seen {
            if let Frame::Push(p) = f {
                if sent.iter().any(|s| p.payload[..] == *s.as_bytes()) {
                    return p;
                }
                other.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
        assert!(
            Instant::now() < deadline,
            "none of {} payloads ({:?} to {:?}) crossed; other pushes seen: {other:?}; {}",
            sent.len(),
            sent.first(),
            sent.last(),
            state()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes raw bus messages, numbered `(epoch, offset)` as a stream's owner numbers them,
/// on `subject` of `broker`: what another node's bridge sends, byte for byte in headers.
fn publish_numbered(broker: &Broker, subject: &str, messages: &[(u32, u64, &str)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(broker.url()).await.expect("connects");
        for &(epoch, offset, payload) in messages {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Rp-Origin", "x");
            h.insert("Rp-Epoch", epoch.to_string().as_str());
            h.insert("Rp-Offset", offset.to_string().as_str());
            client
                .publish_with_headers(subject.to_owned(), h, payload.to_owned().into())
                .await
                .expect("published");
        }
        client.flush().await.expect("flushed");
    });
}

/// A stream that moves to another owner goes on in a new epoch above the new owner's
/// replica. A node that got messages the new owner missed has handed its members higher
/// offsets of the old epoch: they still get every message of the new epoch, for a room, a
/// user's inbox and the broadcast stream (docs/architecture.md, "Owner crashed").
#[test]
fn a_new_epoch_reaches_members_that_were_handed_higher_offsets_of_the_old_one() {
    let broker = Broker::start(None);
    let b = node(&broker, "b");
    let mut m = member(&b, "ub", "r");
    b.wait_metric("ringport_cluster_subscriptions 3");
    let cases = [
        ("ringport.room.r", StreamName::Room("r".into())),
        ("ringport.user.ub", StreamName::User("ub".into())),
        ("ringport.all", StreamName::Room("*".into())),
    ];
    for (subject, stream) in cases {
        // The old epoch's message first, on its own (received before the next is sent), so
        // it is not delivered in one run with the new ones.
        publish_numbered(&broker, subject, &[(7, 100, "old100")]);
        let first = m.push();
        publish_numbered(&broker, subject, &[(9, 91, "new91"), (9, 92, "new92")]);
        // Polled (a PING each round), so a message that never comes fails with what came.
        let mut pushed = vec![first];
        let deadline = Instant::now() + WAIT;
        let mut nonce = 0;
        while pushed.len() < 3 && Instant::now() < deadline {
            nonce += 1;
            for f in m.until_pong(nonce) {
                match f {
                    Frame::Push(p) => pushed.push(p),
                    other => panic!("{subject}: expected PUSH, got {other:?}"),
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let got: Vec<(u32, u64, String)> = pushed
            .into_iter()
            .map(|p| {
                assert_eq!(p.stream, stream, "{subject}: {p:?}");
                let text = String::from_utf8(p.payload.to_vec()).unwrap();
                (p.epoch, p.offset, text)
            })
            .collect();
        assert_eq!(
            got,
            [
                (7, 100, "old100".to_owned()),
                (9, 91, "new91".to_owned()),
                (9, 92, "new92".to_owned())
            ],
            "{subject}"
        );
        nothing_more(&mut m);
    }
}
