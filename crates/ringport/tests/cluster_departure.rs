//! A node of the cluster leaves: SIGTERM (graceful: its clients get GOING_AWAY and resume
//! every stream on another node in the same epoch, with no hole) and SIGKILL (the others
//! notice, its streams get new owners, and a client resuming elsewhere gets the missed
//! messages or an explicit GAP / EPOCH_CHANGED — never a silent hole).
//!
//! The nodes are `ringport serve` processes (signals are real) on a `nats-server` started
//! on a free loopback port.

mod common;

use std::collections::BTreeMap;

use common::cluster::{push, three_nodes, Node, NodeProcess};
use common::gateway::{metric, token, Client};
use ringport_proto::{CloseReason, Frame, ResumeOutcome, ResumePoint, ResumeResult, StreamName};

/// Rooms whose owners (rendezvous over the node ids used here) are spread over the nodes.
const ROOMS: [&str; 8] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"];

/// Where a client is in each stream: stream -> (epoch, last offset).
type Positions = BTreeMap<String, (u32, u64)>;

/// A client of user `user` on `n` in every room of [`ROOMS`]; its session id.
fn mover(n: &impl Node, user: &str) -> (Client, u64) {
    let mut c = n.client();
    let w = c.welcome(&token(user, &ROOMS));
    for (i, room) in ROOMS.iter().enumerate() {
        assert_eq!(c.join(i as u32 + 1, room), ringport_proto::Status::OK);
    }
    (c, w.session_id)
}

/// A message to every room, to the user `user` and to everyone, each through the next node
/// of `via` in turn; how many messages that is.
fn round(via: &[&NodeProcess], user: &str, tag: &str) -> usize {
    let mut k = 0;
    let mut next = || {
        k += 1;
        via[k % via.len()]
    };
    for room in ROOMS {
        push(
            next(),
            &format!("/v1/push/room/{room}"),
            &format!("{tag}-{room}"),
        );
    }
    push(
        next(),
        &format!("/v1/push/user/{user}"),
        &format!("{tag}-dm"),
    );
    push(next(), "/v1/broadcast", &format!("{tag}-all"));
    ROOMS.len() + 2
}

/// Reads `n` PUSHes into `pos`, checking each stream's offsets follow one by one in one epoch.
fn take(c: &mut Client, n: usize, pos: &mut Positions) {
    for _ in 0..n {
        let p = c.push();
        let key = p.stream.to_string();
        if let Some((epoch, last)) = pos.get(&key) {
            assert_eq!(
                (p.epoch, p.offset),
                (*epoch, last + 1),
                "{key}: in order, no hole"
            );
        }
        pos.insert(key, (p.epoch, p.offset));
    }
}

/// Resumes session `session` of `user` on `n` from `pos`: the RESUME_RESULT of every stream
/// and the PUSHes that followed (until a PONG), by stream.
fn resume(
    n: &impl Node,
    user: &str,
    session: u64,
    pos: &Positions,
) -> (
    Client,
    Vec<ResumeResult>,
    BTreeMap<String, Vec<ringport_proto::Push>>,
) {
    let points = pos
        .iter()
        .map(|(s, (epoch, last))| ResumePoint {
            stream: stream_named(s),
            epoch: *epoch,
            last_offset: *last,
        })
        .collect();
    let mut c = n.client();
    c.hello_resume(&token(user, &ROOMS), session, points);
    match c.recv() {
        Frame::Welcome(_) => {}
        other => panic!("expected WELCOME, got {other:?}"),
    }
    let mut results = Vec::new();
    let mut pushes: BTreeMap<String, Vec<_>> = BTreeMap::new();
    // Every stream got one message while the client moved ("missed-..."): read until each
    // stream's RESUME_RESULT and that message are in (a PONG may come anywhere in a replay,
    // so it cannot mark its end); then nothing more may follow.
    let missed = |pushes: &BTreeMap<String, Vec<ringport_proto::Push>>| {
        pushes
            .values()
            .filter(|ps| ps.iter().any(|p| p.payload.starts_with(b"missed-")))
            .count()
    };
    while results.len() < pos.len() || missed(&pushes) < pos.len() {
        match c.recv() {
            Frame::ResumeResult(r) => results.push(r),
            Frame::Push(p) => pushes.entry(p.stream.to_string()).or_default().push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    let extra = c.until_pong(4242);
    assert!(extra.is_empty(), "nothing more: {extra:?}");
    assert_eq!(results.len(), pos.len(), "one RESUME_RESULT per stream");
    (c, results, pushes)
}

fn stream_named(s: &str) -> StreamName {
    match s.split_once(':') {
        Some(("user", u)) => StreamName::User(u.into()),
        Some(("room", r)) => StreamName::Room(r.into()),
        _ => panic!("stream {s}"),
    }
}

/// Waits for the CLOSE GOING_AWAY of a node that is shutting down.
fn going_away(c: &mut Client) {
    let (reason, text) = c.expect_close();
    assert_eq!(reason, CloseReason::GOING_AWAY, "{text}");
}

#[test]
fn a_node_stopped_with_sigterm_hands_its_streams_over_and_its_clients_resume_with_no_hole() {
    let (_broker, [mut a, b, c]) = three_nodes(&[]);
    let (mut on_a, session) = mover(&a, "ux");
    let (mut watch_b, _) = mover(&b, "wb");
    let all: [&NodeProcess; 3] = [&a, &b, &c];
    let mut pos = Positions::new();
    let n = round(&all, "ux", "before");
    take(&mut on_a, n, &mut pos);
    // b has kept (and delivered) every one of them: the replicas are current.
    let mut seen_b = Positions::new();
    take(&mut watch_b, n - 1, &mut seen_b);
    let epochs: std::collections::BTreeSet<u32> = pos.values().map(|(e, _)| *e).collect();
    assert_eq!(
        epochs.len(),
        3,
        "every node owns some of the streams: {pos:?}"
    );

    a.signal("-TERM");
    going_away(&mut on_a);
    assert!(a.wait_exit().success());
    b.wait_log(&[
        "node left; its streams go on in its epochs here",
        "\"gone\":\"a\"",
    ]);
    c.wait_log(&[
        "node left; its streams go on in its epochs here",
        "\"gone\":\"a\"",
    ]);
    for n in [&b, &c] {
        n.wait_metric("ringport_cluster_nodes 2");
    }

    // Missed while moving, pushed through the remaining nodes.
    let rest: [&NodeProcess; 2] = [&b, &c];
    let missed = round(&rest, "ux", "missed");
    take(&mut watch_b, missed - 1, &mut seen_b);

    let (mut on_b, results, replayed) = resume(&b, "ux", session, &pos);
    for r in &results {
        let key = r.stream.to_string();
        assert_eq!(r.outcome, ResumeOutcome::Resumed, "{key}: {r:?}");
        assert_eq!(r.old_epoch, r.new_epoch, "{key}: same epoch");
        let (epoch, last) = pos[&key];
        let got = &replayed[&key];
        // The inbox also replays what was not ACKed (at or below `last`).
        let fresh: Vec<_> = got.iter().filter(|p| p.offset > last).collect();
        assert_eq!(fresh.len(), 1, "{key}: the missed message, once: {got:?}");
        assert_eq!(
            (fresh[0].epoch, fresh[0].offset),
            (epoch, last + 1),
            "{key}"
        );
        assert!(fresh[0].payload.starts_with(b"missed-"), "{key}");
    }
    // Live traffic goes on in the same sequences.
    let after = round(&rest, "ux", "after");
    let mut now = Positions::new();
    take(&mut on_b, after, &mut now);
    for (key, (epoch, offset)) in &now {
        assert_eq!((*epoch, *offset), (pos[key].0, pos[key].1 + 2), "{key}");
    }
    let body = b.http("GET", "/metrics", "").body;
    assert_eq!(metric(&body, "ringport_cluster_nodes"), 2);
}

#[test]
fn a_node_killed_with_sigkill_is_noticed_and_a_resume_elsewhere_is_never_a_silent_hole() {
    let (_broker, [a, b, c]) = three_nodes(&[]);
    let (mut on_a, session) = mover(&a, "ux");
    let all: [&NodeProcess; 3] = [&a, &b, &c];
    let (mut watch_c, _) = mover(&c, "wc");
    let mut pos = Positions::new();
    let n = round(&all, "ux", "before");
    take(&mut on_a, n, &mut pos);
    let mut seen_c = Positions::new();
    take(&mut watch_c, n - 1, &mut seen_c);
    // What a alone numbered: the streams carrying a's epoch.
    let a_epoch = {
        let r = a.http(
            "POST",
            "/v1/push/room/probe?wait=delivered",
            "{\"payload\":\"p\"}",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["epoch"].as_u64().unwrap() as u32
    };
    let owned_by_a: Vec<String> = pos
        .iter()
        .filter(|(_, (e, _))| *e == a_epoch)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        !owned_by_a.is_empty(),
        "a owns some of the streams: {pos:?}"
    );

    a.signal("-KILL");
    drop(on_a);
    for n in [&b, &c] {
        n.wait_metric("ringport_cluster_nodes 2");
        n.wait_log(&["node not heard from", "\"gone\":\"a\""]);
    }

    // Missed while moving, pushed through the remaining nodes; c's member sees every one.
    let rest: [&NodeProcess; 2] = [&b, &c];
    let missed = round(&rest, "ux", "missed");
    // (Streams a owned go on in new epochs: checked apart from before.)
    take(&mut watch_c, missed - 1, &mut Positions::new());
    // And the inbox message (no member of c receives it): c's history has it.
    let deadline = std::time::Instant::now() + common::gateway::WAIT;
    while !c
        .http("GET", "/v1/users/ux/history?since=0&limit=10", "")
        .body
        .contains("missed-dm")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "c never kept missed-dm"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // On c, whose member has seen every missed message (so c's replicas hold them; on b
    // one may still be on its way and then arrives live, after a RESUMED in a's epoch).
    let (_on_c, results, replayed) = resume(&c, "ux", session, &pos);
    for r in &results {
        let key = r.stream.to_string();
        let (epoch, last) = pos[&key];
        let got = replayed.get(&key).cloned().unwrap_or_default();
        let fresh: Vec<_> = got
            .iter()
            .filter(|p| p.epoch != epoch || p.offset > last)
            .collect();
        match r.outcome {
            ResumeOutcome::Resumed => {
                assert!(
                    !owned_by_a.contains(&key),
                    "{key}: a's epoch cannot go on: {r:?}"
                );
                assert_eq!(fresh.len(), 1, "{key}: the missed message: {got:?}");
                assert_eq!(
                    (fresh[0].epoch, fresh[0].offset),
                    (epoch, last + 1),
                    "{key}"
                );
            }
            ResumeOutcome::EpochChanged => {
                assert!(owned_by_a.contains(&key), "{key}: {r:?}");
                assert_eq!(r.old_epoch, a_epoch);
                // The new epoch's message is delivered or told missing, never skipped.
                let delivered = fresh.iter().any(|p| p.payload.starts_with(b"missed-"));
                assert!(
                    delivered || r.missing_to > r.missing_from,
                    "{key}: silent hole: {r:?} {got:?}"
                );
            }
            ResumeOutcome::Gap => {
                assert!(r.missing_to > r.missing_from, "{key}: {r:?}");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(
        results
            .iter()
            .any(|r| r.outcome == ResumeOutcome::EpochChanged),
        "a owned streams: {results:?}"
    );
}
