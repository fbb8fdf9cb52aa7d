//! The SDK against an in-process fake gateway (tests/common): reconnect
//! backoff, exactly-once delivery by offset, explicit NotRecovered, the
//! bounded outbound queue with resend and server-side dedupe, heartbeat,
//! inbox acks. Every wait is bounded.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Fake;
use ringport_client::{
    Backoff, Client, CloseReason, Error, Event, Fault, LossReason, Message, Options, StreamName,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn opts() -> Options {
    Options {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: 0.5,
        },
        handshake_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

fn room(n: &str) -> StreamName {
    StreamName::Room(n.into())
}

/// Collects messages until `pred` holds on what was collected.
async fn collect_until(
    rx: &mut Receiver<Event>,
    mut pred: impl FnMut(&[Message], &[Event]) -> bool,
) -> (Vec<Message>, Vec<Event>) {
    let mut msgs = Vec::new();
    let mut other = Vec::new();
    timeout(WAIT, async {
        while !pred(&msgs, &other) {
            match rx.recv().await {
                Some(Event::Message(m)) => msgs.push(m),
                Some(e) => other.push(e),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; got {} messages, events {other:?}", msgs.len()));
    (msgs, other)
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

#[test]
fn backoff_grows_caps_and_jitters() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.5,
    };
    assert_eq!(b.delay(0, 0.999_999).as_millis(), 99);
    assert_eq!(b.delay(0, 0.0).as_millis(), 50);
    assert_eq!(b.delay(3, 1.0).as_millis(), 800);
    assert_eq!(b.delay(4, 1.0).as_millis(), 1_000, "capped");
    assert_eq!(b.delay(u32::MAX, 1.0).as_millis(), 1_000, "no overflow");
    for attempt in 0..10 {
        for u in [0.0, 0.3, 0.7, 0.99] {
            let d = b.delay(attempt, u);
            let base = (100.0 * 2f64.powi(attempt as i32)).min(1_000.0);
            assert!(
                d.as_secs_f64() * 1e3 >= base * 0.5 - 1e-6 && d.as_secs_f64() * 1e3 <= base + 1e-6
            );
        }
    }
}

#[tokio::test]
async fn reconnect_attempts_back_off_exponentially() {
    let fake = Fake::start(1, 100).await;
    let mut o = opts();
    o.backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(160),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let (_c, _rx) = Client::connect(fake.addr(), "t", o).await.unwrap();
    fake.with(|s| s.accepting = false);
    fake.kick_all();
    wait_for(|| fake.with(|s| s.accepts.len() >= 6)).await;
    let gaps: Vec<u128> = fake.with(|s| {
        s.accepts
            .windows(2)
            .skip(1)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect()
    });
    // After the first failure: 80, 160, 160, 160 ms (+ scheduling slack).
    for (g, want) in gaps.iter().zip([80u128, 160, 160, 160]) {
        assert!(*g >= want - 5 && *g < want + 150, "gaps {gaps:?}");
    }
}

#[tokio::test]
async fn auth_failure_is_a_typed_error() {
    let fake = Fake::start(1, 100).await;
    match Client::connect(fake.addr(), "bad", opts()).await {
        Err(Error::AuthFailed { text }) => assert_eq!(text, "bad token"),
        other => panic!("{other:?}"),
    }
}

/// protocol.md §5.1: on CLOSE POLICY (a limit bit: the per-IP handshake rate after a server
/// restart, "server full") and on GOING_AWAY or INTERNAL a client backs off and reconnects.
/// Observed: a reconnect answered with any CLOSE but HANDSHAKE_TIMEOUT ended the client for
/// good ("closed by server"), so a refusal at a restart cut it off until the application
/// noticed.
#[tokio::test]
async fn a_reconnect_refused_with_a_limit_backs_off_and_tries_again() {
    for reason in [
        CloseReason::POLICY,
        CloseReason::GOING_AWAY,
        CloseReason::INTERNAL,
    ] {
        let fake = Fake::start(1, 100).await;
        let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
        c.join("r").await.unwrap();
        fake.with(|s| s.refuse_hello = Some((reason, "too many new connections".into())));
        fake.kick_all();
        wait_for(|| fake.with(|s| s.accepts.len() >= 4)).await;
        fake.with(|s| s.refuse_hello = None);
        fake.push(&room("r"), "after");
        let (msgs, events) = collect_until(&mut rx, |m, e| {
            !m.is_empty() || e.iter().any(|e| matches!(e, Event::Closed { .. }))
        })
        .await;
        assert_eq!(msgs.len(), 1, "{reason:?}: {events:?}");
        assert!(
            events.iter().any(|e| matches!(e, Event::Connected { .. })),
            "{reason:?}: {events:?}"
        );
    }
}

/// AUTH_FAILED and UNSUPPORTED_VERSION during a reconnect end the client (a new token, or
/// another client version, is needed).
#[tokio::test]
async fn a_reconnect_refused_for_good_ends_the_client() {
    for reason in [CloseReason::AUTH_FAILED, CloseReason::UNSUPPORTED_VERSION] {
        let fake = Fake::start(1, 100).await;
        let (_c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
        fake.with(|s| s.refuse_hello = Some((reason, "no".into())));
        fake.kick_all();
        let (_, events) = collect_until(&mut rx, |_, e| {
            e.iter().any(|e| matches!(e, Event::Closed { .. }))
        })
        .await;
        assert!(
            matches!(events.last(), Some(Event::Closed { .. })),
            "{reason:?}: {events:?}"
        );
        let accepts = fake.with(|s| s.accepts.len());
        assert_eq!(accepts, 2, "{reason:?}: one reconnect, no more");
    }
}

#[tokio::test]
async fn each_offset_once_across_resumes_with_overlapping_replays() {
    let fake = Fake::start(1, 10_000).await;
    fake.with(|s| s.replay_extra = 5); // the server resends 5 old frames per resume
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("r").await.unwrap();
    // The client resumes streams it has a position in (see the crate docs).
    fake.push(&room("r"), "warm-up");
    collect_until(&mut rx, |m, _| m.len() == 1).await;
    let mut total = 1;
    for round in 0..5 {
        for i in 0..40 {
            fake.push(&room("r"), &format!("{round}-{i}"));
        }
        total += 40;
        if round % 2 == 0 {
            fake.kick_all();
        } else {
            c.inject_fault(Fault::Reset).await;
        }
    }
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() + 1 >= total).await;
    let offsets: Vec<u64> = msgs.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (2..=total as u64).collect::<Vec<_>>());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::NotRecovered { .. })),
        "{events:?}"
    );
    // Nothing more (no late duplicate) arrives.
    fake.push(&room("r"), "last");
    let (more, _) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(more[0].offset, total as u64 + 1);
}

#[tokio::test]
async fn trimmed_history_is_reported_not_skipped() {
    let fake = Fake::start(1, 5).await;
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("r").await.unwrap();
    fake.push(&room("r"), "1");
    collect_until(&mut rx, |m, _| m.len() == 1).await;
    // Disconnected while 20 messages go by; history keeps the last 5.
    fake.with(|s| s.accepting = false);
    fake.kick_all();
    for i in 0..20 {
        fake.push(&room("r"), &i.to_string());
    }
    fake.with(|s| s.accepting = true);
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() == 5).await;
    let loss = events.iter().find_map(|e| match e {
        Event::NotRecovered {
            reason,
            missing,
            epoch,
            ..
        } => Some((*reason, missing.clone(), *epoch)),
        _ => None,
    });
    assert_eq!(loss, Some((LossReason::Gap, 2..17, 1)));
    assert_eq!(
        msgs.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [17, 18, 19, 20, 21]
    );
}

#[tokio::test]
async fn server_restart_reports_epoch_change() {
    let fake = Fake::start(1, 100).await;
    let addr = fake.addr;
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("r").await.unwrap();
    fake.push(&room("r"), "a");
    fake.push(&room("r"), "b");
    collect_until(&mut rx, |m, _| m.len() == 2).await;
    // "Restart": a new server on the same port with a new epoch.
    fake.stop().await;
    let restarted = Fake::start_on(addr, 2, 100).await;
    restarted.push(&room("r"), "new");
    let (msgs, events) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    // (The broadcast stream, resumed from WELCOME's tail, reports its restart too.)
    let loss = events.iter().find_map(|e| match e {
        Event::NotRecovered {
            stream,
            reason,
            missing,
            epoch,
        } if *stream == room("r") => Some((*reason, missing.clone(), *epoch)),
        _ => None,
    });
    assert_eq!(
        loss,
        Some((
            LossReason::EpochChanged,
            std::ops::Range { start: 1, end: 1 },
            2
        ))
    );
    assert_eq!((msgs[0].epoch, msgs[0].offset), (2, 1));
}

#[tokio::test]
async fn outbound_queue_is_bounded_and_resent_once() {
    let fake = Fake::start(1, 100).await;
    let mut o = opts();
    o.outbound_queue = 4;
    let (c, mut rx) = Client::connect(fake.addr(), "t", o).await.unwrap();
    c.join("r").await.unwrap();
    // Acks get lost and the connection drops: the client must resend.
    fake.with(|s| {
        s.lose_acks = true;
        s.accepting = false;
    });
    let mut pending = Vec::new();
    for i in 0..4 {
        let c = c.clone();
        pending.push(tokio::spawn(async move {
            c.publish("r", format!("p{i}")).await
        }));
    }
    wait_for(|| fake.with(|s| s.publish_frames == 4)).await;
    assert!(matches!(
        c.publish("r", "overflow").await,
        Err(Error::QueueFull { capacity: 4 })
    ));
    fake.kick_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.with(|s| {
        s.lose_acks = false;
        s.accepting = true;
    });
    for p in pending {
        timeout(WAIT, p).await.unwrap().unwrap().unwrap();
    }
    fake.with(|s| {
        assert_eq!(s.published, 4, "each publish published once");
        assert_eq!(s.publish_frames, 8, "all four resent after the reconnect");
    });
    let (msgs, _) = collect_until(&mut rx, |m, _| m.len() == 4).await;
    assert_eq!(
        msgs.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn publish_while_disconnected_arrives_after_reconnect() {
    let fake = Fake::start(1, 100).await;
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("r").await.unwrap();
    fake.with(|s| s.accepting = false);
    fake.kick_all();
    let c2 = c.clone();
    let p = tokio::spawn(async move { c2.publish("r", "offline").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.with(|s| s.published), 0);
    fake.with(|s| s.accepting = true);
    timeout(WAIT, p).await.unwrap().unwrap().unwrap();
    let (msgs, _) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(&msgs[0].payload[..], b"offline");
    assert_eq!(fake.with(|s| s.published), 1);
}

#[tokio::test]
async fn heartbeat_pings_and_answers_pings() {
    let fake = Fake::start(1, 100).await;
    let mut o = opts();
    o.heartbeat_interval = Some(Duration::from_millis(30));
    let (_c, _rx) = Client::connect(fake.addr(), "t", o).await.unwrap();
    wait_for(|| fake.with(|s| s.pings >= 3)).await;
}

#[tokio::test]
async fn silent_server_is_detected_dead() {
    let fake = Fake::start(1, 100).await;
    let mut o = opts();
    o.heartbeat_interval = Some(Duration::from_millis(30));
    let (c, mut rx) = Client::connect(fake.addr(), "t", o).await.unwrap();
    // The client freezes past its heartbeat; it comes back and carries on
    // (the fake does not enforce heartbeats, so the connection survives).
    c.inject_fault(Fault::Pause(Duration::from_millis(100)))
        .await;
    c.join("r").await.unwrap();
    fake.push(&room("r"), "x");
    collect_until(&mut rx, |m, _| m.len() == 1).await;
}

#[tokio::test]
async fn inbox_is_acked_and_unacked_redelivered_once_to_the_app() {
    let fake = Fake::start(1, 100).await;
    let (c, mut rx) = Client::connect(fake.addr(), "user:u1", opts())
        .await
        .unwrap();
    let inbox = StreamName::User("u1".into());
    for i in 0..10 {
        fake.push(&inbox, &i.to_string());
    }
    collect_until(&mut rx, |m, _| m.len() == 10).await;
    wait_for(|| fake.with(|s| s.highest_ack == 10)).await;
    // Pretend the server lost the last acks: it redelivers 6..=10 on resume;
    // the application must not see them again.
    fake.with(|s| s.highest_ack = 5);
    c.inject_fault(Fault::Abort).await;
    fake.push(&inbox, "10");
    let (msgs, _) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(msgs.iter().map(|m| m.offset).collect::<Vec<_>>(), [11]);
    wait_for(|| fake.with(|s| s.highest_ack == 11)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_many_cuts_exactly_once() {
    let fake = Fake::start(1, 100_000).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let (c, rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
        c.join("r").await.unwrap();
        clients.push((c, rx));
    }
    let publisher = clients[0].0.clone();
    let n = 500u64;
    let pubs = tokio::spawn(async move {
        for i in 0..n {
            publisher.publish("r", i.to_string()).await.unwrap();
        }
    });
    for k in 0..20 {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let (c, _) = &clients[k % 10];
        c.inject_fault(if k % 2 == 0 {
            Fault::Reset
        } else {
            Fault::Abort
        })
        .await;
        if k % 5 == 0 {
            fake.kick_all();
        }
    }
    let progress = fake.clone();
    timeout(WAIT, pubs)
        .await
        .unwrap_or_else(|_| panic!("publishing stalled at {}", progress.with(|s| s.published)))
        .unwrap();
    let mut seen = HashMap::new();
    for (i, (_, rx)) in clients.iter_mut().enumerate() {
        let (msgs, _) = collect_until(rx, |m, _| m.len() as u64 >= n).await;
        let offs: Vec<u64> = msgs.iter().map(|m| m.offset).collect();
        assert_eq!(offs, (1..=n).collect::<Vec<_>>(), "client {i}");
        seen.insert(i, offs.len());
    }
    assert_eq!(fake.with(|s| s.published), n);
}

/// Offsets of `msgs` and the NotRecovered events among `events`.
fn offsets_and_losses(
    msgs: &[Message],
    events: &[Event],
) -> (Vec<u64>, Vec<(LossReason, std::ops::Range<u64>)>) {
    let losses = events
        .iter()
        .filter_map(|e| match e {
            Event::NotRecovered {
                reason, missing, ..
            } => Some((*reason, missing.clone())),
            _ => None,
        })
        .collect();
    (msgs.iter().map(|m| m.offset).collect(), losses)
}

/// Cuts every connection, runs `during` while reconnects are refused, then accepts again.
fn cut(fake: &Fake, during: impl FnOnce()) {
    fake.with(|s| s.accepting = false);
    fake.kick_all();
    during();
    fake.with(|s| s.accepting = true);
}

#[tokio::test]
async fn quiet_room_is_resumed_from_the_join_tail() {
    let fake = Fake::start(1, 100).await;
    fake.push(&room("q"), "before the join");
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("q").await.unwrap();
    // No message of room q has reached the client when the connection dies.
    cut(&fake, || {
        for i in 0..3 {
            fake.push(&room("q"), &format!("cut {i}"));
        }
    });
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() == 3).await;
    assert_eq!(offsets_and_losses(&msgs, &events), (vec![2, 3, 4], vec![]));
    fake.push(&room("q"), "live");
    let (msgs, events) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(offsets_and_losses(&msgs, &events), (vec![5], vec![]));
}

#[tokio::test]
async fn quiet_room_with_short_history_reports_the_loss() {
    let fake = Fake::start(1, 2).await;
    fake.push(&room("q"), "before the join");
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("q").await.unwrap();
    cut(&fake, || {
        for i in 0..5 {
            fake.push(&room("q"), &format!("cut {i}"));
        }
    });
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() == 2).await;
    assert_eq!(
        offsets_and_losses(&msgs, &events),
        (vec![5, 6], vec![(LossReason::Gap, 2..5)])
    );
}

#[tokio::test]
async fn broadcast_is_resumed_before_its_first_message() {
    let fake = Fake::start(1, 100).await;
    let all = room("*");
    fake.push(&all, "before the connection");
    let (_c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    // No broadcast has reached the client when the connection dies.
    cut(&fake, || {
        for i in 0..3 {
            fake.push(&all, &format!("cut {i}"));
        }
    });
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() == 3).await;
    assert_eq!(offsets_and_losses(&msgs, &events), (vec![2, 3, 4], vec![]));
    fake.push(&all, "live");
    let (msgs, events) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(offsets_and_losses(&msgs, &events), (vec![5], vec![]));
}

#[tokio::test]
async fn inbox_is_resumed_before_its_first_message() {
    let fake = Fake::start(1, 100).await;
    let inbox = StreamName::User("u1".into());
    fake.push(&inbox, "before the connection");
    let (c, mut rx) = Client::connect(fake.addr(), "user:u1", opts())
        .await
        .unwrap();
    // A round trip: an ACK of the WELCOME tail (never received) would have arrived.
    c.join("x").await.unwrap();
    assert_eq!(fake.with(|s| s.highest_ack), 0, "acked what it never got");
    cut(&fake, || {
        for i in 0..3 {
            fake.push(&inbox, &format!("cut {i}"));
        }
    });
    let (msgs, events) = collect_until(&mut rx, |m, _| m.len() == 3).await;
    assert_eq!(offsets_and_losses(&msgs, &events), (vec![2, 3, 4], vec![]));
    wait_for(|| fake.with(|s| s.highest_ack == 4)).await;
}

#[tokio::test]
async fn refused_resume_is_reported_not_silent() {
    let fake = Fake::start(1, 100).await;
    let (c, mut rx) = Client::connect(fake.addr(), "t", opts()).await.unwrap();
    c.join("a").await.unwrap();
    c.join("b").await.unwrap();
    cut(&fake, || {
        fake.with(|s| s.refuse.insert(room("b")));
    });
    let (_, events) = collect_until(&mut rx, |_, e| {
        e.iter().any(|e| matches!(e, Event::ResumeRefused { .. }))
    })
    .await;
    assert!(events.contains(&Event::ResumeRefused {
        stream: room("b"),
        status: ringport_client::Status::FORBIDDEN,
    }));
    fake.push(&room("a"), "still here");
    let (msgs, _) = collect_until(&mut rx, |m, _| !m.is_empty()).await;
    assert_eq!(msgs[0].stream, room("a"));
}
