//! Reliable delivery end to end: the gateway (in process, or the `ringport` binary as a child
//! process) driven by the Rust SDK over loopback.
//!
//! - chaos: 50 clients in a room, 20,000 messages (HTTP and client publishes) while
//!   connections are cut at random (RST, abrupt close, server-side kick, client frozen past
//!   its heartbeat): every client ends with every offset exactly once, in order;
//! - SIGKILL and restart: resuming clients get `EpochChanged` with the new epoch, never a
//!   replay from the old one; publishes made while the server is down arrive once after it
//!   is back;
//! - the time to resume a 1,000-message gap (printed for docs/benchmarks.md).

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{metric, test_config, token, TestServer, SECRET};
use common::{request, runtime, sdk_options};
use rand::Rng;
use ringport_client::{Client, Event, Fault, LossReason, StreamName};
use ringport_proto::{Frame, Hello, Resume, ResumeOutcome, ResumePoint};
use tokio::sync::mpsc::Receiver;

const ROOM: &str = "chaos";

/// What one client saw of the room.
#[derive(Debug, Default)]
struct Seen {
    epoch: u32,
    last: u64,
    count: u64,
    /// Offsets out of order or repeated (must stay empty).
    errors: Vec<String>,
    /// NotRecovered events.
    lost: Vec<(LossReason, std::ops::Range<u64>, u32)>,
    payloads: Vec<String>,
}

/// Records every event of `rx` into `seen` until the channel closes.
fn collect(mut rx: Receiver<Event>, seen: Arc<Mutex<Seen>>, keep_payloads: bool) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let mut s = seen.lock().unwrap();
            match ev {
                Event::Message(m) if m.stream == StreamName::Room(ROOM.into()) => {
                    if m.epoch == s.epoch && m.offset != s.last + 1 {
                        let e = format!("offset {} after {}", m.offset, s.last);
                        s.errors.push(e);
                    }
                    s.epoch = m.epoch;
                    s.last = m.offset;
                    s.count += 1;
                    if keep_payloads {
                        s.payloads
                            .push(String::from_utf8_lossy(&m.payload).into_owned());
                    }
                }
                // Only the room's: room:* (resumed from WELCOME's tail) reports its own.
                Event::NotRecovered {
                    stream,
                    reason,
                    missing,
                    epoch,
                } if stream == StreamName::Room(ROOM.into()) => {
                    if epoch == s.epoch && missing.start != s.last + 1 {
                        let e = format!("loss {missing:?} reported after offset {}", s.last);
                        s.errors.push(e);
                    }
                    s.lost.push((reason, missing.clone(), epoch));
                    // Delivery continues at missing.end in `epoch`.
                    s.epoch = epoch;
                    s.last = missing.end.saturating_sub(1);
                }
                _ => {}
            }
        }
    });
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn push_http(admin: std::net::SocketAddr, body: &str) {
    let r = request(
        admin,
        "POST",
        &format!("/v1/push/room/{ROOM}"),
        &[],
        &format!(r#"{{"payload":"{body}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn member_ids(admin: std::net::SocketAddr) -> Vec<String> {
    let r = request(
        admin,
        "GET",
        &format!("/v1/rooms/{ROOM}?sample=1000"),
        &[],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["connection"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn messages_from_env(default: u64) -> u64 {
    std::env::var("RINGPORT_CHAOS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn chaos_every_client_gets_every_offset_exactly_once_in_order() {
    chaos(50, messages_from_env(20_000), 100_000);
}

/// With a short history, long cuts lose messages: each client still sees every offset at
/// most once, in order, and every hole is reported (delivered + reported = all offsets).
#[test]
fn chaos_with_short_history_reports_every_hole() {
    chaos(20, messages_from_env(20_000) / 4, 200);
}

fn chaos(clients_n: usize, total: u64, history: u32) {
    const PUBLISHERS: usize = 5;
    let clients_n = clients_n.max(PUBLISHERS);
    let via_http = total / 4;
    let per_publisher = (total - via_http) / PUBLISHERS as u64;
    let total = via_http + per_publisher * PUBLISHERS as u64;

    let mut config = test_config();
    config.history.max_messages_per_stream = history;
    config.history.max_age_ms = 600_000;
    config.rooms.publish_rate_per_sec = 1_000_000;
    config.rooms.publish_burst = 1_000_000;
    // Heartbeat 500 ms, probes every 250 ms, closed after 1.5 s of silence.
    config.protocol.heartbeat_interval_ms = 500;
    config.protocol.heartbeat_tolerated = 1;
    config.protocol.heartbeat_probe_interval_ms = 250;
    config.protocol.heartbeat_close_after = 1;
    config.engine.send_high_water = 64 << 20;
    let server = TestServer::start(config);
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    let started = Instant::now();

    runtime().block_on(async move {
        let mut clients = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..clients_n {
            let (c, rx) = Client::connect(addr.clone(), "", sdk_options())
                .await
                .unwrap();
            c.join(ROOM).await.unwrap();
            let s = Arc::new(Mutex::new(Seen::default()));
            collect(rx, s.clone(), false);
            clients.push(c);
            seen.push(s);
        }
        // One message everyone has, so every client resumes the room by position.
        tokio::task::spawn_blocking(move || push_http(admin, "warm-up"))
            .await
            .unwrap();
        wait_until("warm-up", Duration::from_secs(20), || {
            seen.iter().all(|s| s.lock().unwrap().last == 1)
        })
        .await;

        // Publishers: an HTTP backend and five clients with up to 64 publishes in flight.
        let http = tokio::task::spawn_blocking(move || {
            for i in 0..via_http {
                push_http(admin, &format!("h{i}"));
            }
        });
        let mut pubs = Vec::new();
        for (p, c) in clients.iter().take(PUBLISHERS).enumerate() {
            let c = c.clone();
            pubs.push(tokio::spawn(async move {
                let sem = Arc::new(tokio::sync::Semaphore::new(64));
                let mut tasks = Vec::new();
                for i in 0..per_publisher {
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    let c = c.clone();
                    tasks.push(tokio::spawn(async move {
                        let r = c.publish(ROOM, format!("c{p}-{i}")).await;
                        drop(permit);
                        r
                    }));
                }
                for t in tasks {
                    t.await.unwrap().expect("publish acknowledged");
                }
            }));
        }

        // Chaos until the publishers are done.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chaos = {
            let clients = clients.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut counts: HashMap<&'static str, u32> = HashMap::new();
                let mut round = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    let (victim, kind) = {
                        let mut rng = rand::rng();
                        (
                            rng.random_range(0..clients.len()),
                            rng.random_range(0..20u32),
                        )
                    };
                    let c = &clients[victim];
                    let what = match kind {
                        0..=6 => {
                            c.inject_fault(Fault::Reset).await;
                            "rst"
                        }
                        7..=13 => {
                            c.inject_fault(Fault::Abort).await;
                            "close"
                        }
                        14..=18 => {
                            let ids = tokio::task::spawn_blocking(move || member_ids(admin))
                                .await
                                .unwrap();
                            if ids.is_empty() {
                                continue;
                            }
                            let id = ids[round as usize % ids.len()].clone();
                            tokio::task::spawn_blocking(move || {
                                request(admin, "DELETE", &format!("/v1/connections/{id}"), &[], "")
                            })
                            .await
                            .unwrap();
                            "kick"
                        }
                        _ => {
                            // Frozen past the server's heartbeat deadline (1.5 s).
                            c.inject_fault(Fault::Pause(Duration::from_millis(1_800)))
                                .await;
                            "pause"
                        }
                    };
                    *counts.entry(what).or_default() += 1;
                }
                counts
            })
        };
        http.await.unwrap();
        for p in pubs {
            p.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let counts = chaos.await.unwrap();

        let tail = total + 1;
        wait_until("every client at the tail", Duration::from_secs(120), || {
            seen.iter().all(|s| s.lock().unwrap().last >= tail)
        })
        .await;
        let mut holes = 0;
        for (i, s) in seen.iter().enumerate() {
            let s = s.lock().unwrap();
            assert!(
                s.errors.is_empty(),
                "client {i}: {:?}",
                &s.errors[..s.errors.len().min(5)]
            );
            let lost: u64 = s.lost.iter().map(|(_, m, _)| m.end - m.start).sum();
            if u64::from(history) > tail {
                assert!(
                    s.lost.is_empty(),
                    "client {i}: history holds everything, yet {:?}",
                    s.lost
                );
            }
            for (reason, _, _) in &s.lost {
                assert_eq!(*reason, LossReason::Gap, "client {i}");
            }
            holes += s.lost.len();
            assert_eq!(s.last, tail, "client {i}");
            assert_eq!(
                s.count + lost,
                tail,
                "client {i}: delivered + reported lost = all"
            );
        }
        // Nothing published twice (resent publishes were deduplicated): the stream's tail is
        // exactly the number of messages.
        let m = tokio::task::spawn_blocking(move || {
            push_http(admin, "final");
            request(admin, "GET", "/metrics", &[], "").body
        })
        .await
        .unwrap();
        wait_until("final", Duration::from_secs(20), || {
            seen.iter().all(|s| s.lock().unwrap().last == tail + 1)
        })
        .await;
        let history_gauge = m
            .lines()
            .find(|l| l.starts_with("ringport_history_bytes "))
            .expect("history gauge");
        eprintln!(
            "chaos: {clients_n} clients, {total} messages ({via_http} via HTTP), history \
             {history}, faults {counts:?}, holes reported {holes}, {history_gauge}, {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for c in clients {
            c.close().await;
        }
    });
}

#[test]
fn trimmed_history_is_reported_as_not_recovered() {
    let mut config = test_config();
    config.history.max_messages_per_stream = 10;
    let server = TestServer::start(config);
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    runtime().block_on(async move {
        let mut o = sdk_options();
        // Stay away long enough for 30 messages to pass (max caps initial: raise both).
        o.backoff.initial = Duration::from_millis(1_500);
        o.backoff.max = o.backoff.initial;
        o.backoff.jitter = 0.0;
        let (c, rx) = Client::connect(addr, "", o).await.unwrap();
        c.join(ROOM).await.unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        collect(rx, seen.clone(), false);
        tokio::task::spawn_blocking(move || push_http(admin, "1"))
            .await
            .unwrap();
        wait_until("first", Duration::from_secs(10), || {
            seen.lock().unwrap().last == 1
        })
        .await;
        c.inject_fault(Fault::Reset).await;
        tokio::task::spawn_blocking(move || {
            for i in 0..30 {
                push_http(admin, &format!("m{i}"));
            }
        })
        .await
        .unwrap();
        wait_until("resume", Duration::from_secs(10), || {
            seen.lock().unwrap().last == 31
        })
        .await;
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.lost.len(), 1, "{:?}", s.lost);
        let (reason, missing, _) = s.lost[0].clone();
        assert_eq!(
            (reason, missing),
            (LossReason::Gap, 2..22),
            "history keeps 22..=31"
        );
        assert_eq!(s.count, 1 + 10);
    });
}

/// `ringport serve` as a child process on `listen`; returns it and its client address.
fn spawn_server(listen: &str) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(common::serve_args(listen))
        .args([
            "--set",
            "rooms.publish_rate_per_sec=100000",
            "--set",
            "rooms.publish_burst=100000",
        ])
        .env_clear()
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "ringport ready" {
            let clients = v["clients"].as_str().unwrap().to_owned();
            let admin = v["admin"].as_str().unwrap().to_owned();
            std::thread::spawn(move || stderr.for_each(drop));
            return (child, clients, admin);
        }
    }
    panic!("ringport exited before it was ready: {:?}", child.wait());
}

#[test]
fn sigkill_restart_reports_new_epoch_and_offline_publishes_arrive_once() {
    let (mut server, addr, _) = spawn_server("127.0.0.1:0");
    runtime().block_on(async move {
        let (sub, rx) = Client::connect(addr.clone(), "", sdk_options())
            .await
            .unwrap();
        sub.join(ROOM).await.unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        collect(rx, seen.clone(), true);
        let (publisher, _prx) = Client::connect(addr.clone(), "", sdk_options())
            .await
            .unwrap();
        publisher.join(ROOM).await.unwrap();
        for i in 0..5 {
            publisher
                .publish(ROOM, format!("before-{i}"))
                .await
                .unwrap();
        }
        wait_until("before", Duration::from_secs(10), || {
            seen.lock().unwrap().last == 5
        })
        .await;
        let old_epoch = seen.lock().unwrap().epoch;

        server.kill().unwrap(); // SIGKILL: no CLOSE, no flush, history gone
        server.wait().unwrap();
        // Published while the server is down: queued in the SDK, sent after the reconnect.
        let offline: Vec<_> = (0..10)
            .map(|i| {
                let p = publisher.clone();
                tokio::spawn(async move { p.publish(ROOM, format!("offline-{i}")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (restarted, _, _) = tokio::task::spawn_blocking(move || spawn_server(&addr))
            .await
            .unwrap();
        for p in offline {
            p.await
                .unwrap()
                .expect("offline publish acknowledged after restart");
        }
        wait_until("offline publishes", Duration::from_secs(20), || {
            seen.lock()
                .unwrap()
                .payloads
                .iter()
                .filter(|p| p.starts_with("offline-"))
                .count()
                >= 10
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let (reason, missing, epoch) = s.lost.first().cloned().expect("a NotRecovered event");
        assert_eq!(reason, LossReason::EpochChanged);
        assert_ne!(epoch, old_epoch, "the new process has a new epoch");
        // Everything after offset 5 of the old epoch is gone; `missing` is the part of the
        // new epoch before the first message delivered (docs/protocol.md 4.10).
        assert_eq!(missing.start, 1, "{missing:?}");
        assert!(missing.start <= missing.end, "{missing:?}");
        assert_eq!(
            s.epoch, epoch,
            "nothing delivered from the old epoch after the restart"
        );
        let mut offline: Vec<_> = s
            .payloads
            .iter()
            .filter(|p| p.starts_with("offline-"))
            .collect();
        offline.sort();
        offline.dedup();
        assert_eq!(
            offline.len(),
            10,
            "each offline publish exactly once: {:?}",
            s.payloads
        );
        assert_eq!(
            s.payloads
                .iter()
                .filter(|p| p.starts_with("offline-"))
                .count(),
            10
        );
        let mut restarted = restarted;
        let _ = restarted.kill();
        let _ = restarted.wait();
    });
}

#[test]
fn resume_of_a_1000_message_gap() {
    const GAP: u64 = 1_000;
    let mut config = test_config();
    config.history.max_messages_per_stream = 10_000;
    let server = TestServer::start(config);
    // A client that saw offset 1, then went away.
    let mut c = server.welcomed("");
    assert_eq!(c.join(1, ROOM), ringport_proto::Status::OK);
    let r = server.http(
        "POST",
        &format!("/v1/push/room/{ROOM}"),
        r#"{"payload":"first"}"#,
    );
    assert_eq!(r.status, 200);
    let epoch = c.push().epoch;
    drop(c);
    let body = format!(r#"{{"payload":"{}"}}"#, "x".repeat(100));
    for _ in 0..GAP {
        assert_eq!(
            server
                .http("POST", &format!("/v1/push/room/{ROOM}"), &body)
                .status,
            200
        );
    }
    let mut c = server.client();
    let start = Instant::now();
    c.send(&Frame::Hello(Hello {
        token: bytes::Bytes::new(),
        client_info: "gap".into(),
        resume: Some(Resume {
            session_id: 1,
            streams: vec![ResumePoint {
                stream: StreamName::Room(ROOM.into()),
                epoch,
                last_offset: 1,
            }],
        }),
    }));
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    match c.recv() {
        Frame::ResumeResult(r) => assert_eq!(r.outcome, ResumeOutcome::Resumed),
        other => panic!("{other:?}"),
    }
    let mut next = 2;
    while next <= GAP + 1 {
        let p = c.push();
        assert_eq!(p.offset, next);
        next += 1;
    }
    let took = start.elapsed();
    eprintln!(
        "resume of a {GAP}-message gap (100-byte payloads): {:.2} ms from HELLO to the last PUSH",
        took.as_secs_f64() * 1e3
    );
}

#[test]
fn inbox_is_acked_counted_and_resumed_exactly_once() {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    let server = TestServer::start(config);
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    let push_user = move |body: &str| {
        let r = request(
            admin,
            "POST",
            "/v1/push/user/u1",
            &[],
            &format!(r#"{{"payload":"{body}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    runtime().block_on(async move {
        let (c, mut rx) = Client::connect(addr, token("u1", &[]), sdk_options())
            .await
            .unwrap();
        let inbox = StreamName::User("u1".into());
        let mut got = Vec::new();
        for i in 0..5 {
            tokio::task::spawn_blocking(move || push_user(&format!("a{i}")))
                .await
                .unwrap();
            got.push(next_message(&mut rx).await);
        }
        // Cut; three messages arrive while the client is away; the inbox is resumed.
        c.inject_fault(Fault::Reset).await;
        tokio::task::spawn_blocking(move || {
            for i in 0..3 {
                push_user(&format!("b{i}"));
            }
        })
        .await
        .unwrap();
        for _ in 0..3 {
            got.push(next_message(&mut rx).await);
        }
        assert!(got.iter().all(|m| m.stream == inbox));
        let offsets: Vec<u64> = got.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (1..=8).collect::<Vec<_>>());
        c.close().await;
    });
    // Every message was acknowledged: 8 delivery receipts.
    server.wait_metric("ringport_inbox_acked_total 8");
}

async fn next_message(rx: &mut Receiver<Event>) -> ringport_client::Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Event::Message(m))) => return m,
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

fn post(admin: std::net::SocketAddr, path: &str, body: &str) {
    let r = request(
        admin,
        "POST",
        path,
        &[],
        &format!(r#"{{"payload":"{body}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A client that joined a room and has an inbox, but got no message of either, is cut;
/// messages published meanwhile reach it exactly once after the reconnect (before ROOM_RESULT
/// and WELCOME carried the tails, the SDK re-joined live and lost them silently).
#[test]
fn quiet_room_and_inbox_resume_after_a_cut_before_their_first_message() {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    let server = TestServer::start(config);
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    let room_path = format!("/v1/push/room/{ROOM}");
    // Before the client exists: never delivered to it, never reported as lost.
    post(admin, &room_path, "old");
    post(admin, "/v1/push/user/u3", "old");
    runtime().block_on(async move {
        let mut o = sdk_options();
        // Stay away long enough for the publishes during the cut.
        o.backoff.initial = Duration::from_millis(1_500);
        o.backoff.max = o.backoff.initial;
        o.backoff.jitter = 0.0;
        let (c, mut rx) = Client::connect(addr, token("u3", &[ROOM]), o)
            .await
            .unwrap();
        c.join(ROOM).await.unwrap();
        c.inject_fault(Fault::Reset).await;
        // The publishes must happen during the cut, not before it.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Event::Disconnected { .. })) => break,
                Ok(Some(Event::Message(m))) => panic!("message before the cut: {m:?}"),
                Ok(Some(_)) => {}
                other => panic!("no disconnect: {other:?}"),
            }
        }
        let room_path2 = room_path.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..3 {
                post(admin, &room_path2, &format!("cut {i}"));
                post(admin, "/v1/push/user/u3", &format!("cut {i}"));
            }
        })
        .await
        .unwrap();
        let mut got: HashMap<StreamName, Vec<u64>> = HashMap::new();
        let mut lost = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.values().map(Vec::len).sum::<usize>() < 6 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(Event::Message(m))) => got.entry(m.stream).or_default().push(m.offset),
                Ok(Some(Event::NotRecovered {
                    stream, missing, ..
                })) => lost.push((stream, missing)),
                Ok(Some(_)) => {}
                other => panic!("got {got:?}, lost {lost:?}, then {other:?}"),
            }
        }
        // One live message each: exactly once, right after the replayed ones.
        tokio::task::spawn_blocking(move || {
            post(admin, &room_path, "live");
            post(admin, "/v1/push/user/u3", "live");
        })
        .await
        .unwrap();
        for _ in 0..2 {
            let m = next_message(&mut rx).await;
            got.entry(m.stream).or_default().push(m.offset);
        }
        assert!(lost.is_empty(), "{lost:?}");
        assert_eq!(got[&StreamName::Room(ROOM.into())], [2, 3, 4, 5]);
        assert_eq!(got[&StreamName::User("u3".into())], [2, 3, 4, 5]);
        c.close().await;
    });
    // Receipts per user: the SDK acked what it received (2..=5), never the WELCOME tail.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(admin, "GET", "/v1/users/u3/receipts", &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if v["acked_offset"] == 5 {
            assert_eq!(
                (v["user"].as_str(), v["tail"].as_u64()),
                (Some("u3"), Some(5))
            );
            assert_eq!(
                v["acked_count"], 5,
                "cumulative ACK of 5 covers offsets 1..=5"
            );
            break;
        }
        assert!(Instant::now() < deadline, "receipts never reached 5: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On the wire: ROOM_RESULT and WELCOME carry the tails; every resume entry gets exactly one
/// RESUME_RESULT, in entry order, a refused one with outcome REFUSED and its status
/// (docs/protocol.md, 4.10).
#[test]
fn tails_on_the_wire_and_refused_resume_entries() {
    use ringport_proto::Status;
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    config.auth.allow_anonymous = Some(true);
    config.rooms.max_rooms_per_connection = 1;
    let server = TestServer::start(config);
    let admin = server.admin_addr;
    for i in 0..3 {
        post(admin, "/v1/push/room/quiet", &format!("r{i}"));
    }
    post(admin, "/v1/push/user/u4", "x");
    post(admin, "/v1/push/user/u4", "y");
    for i in 0..4 {
        post(admin, "/v1/broadcast", &format!("b{i}"));
    }
    let tok = token("u4", &["quiet", "more"]);
    let mut c = server.client();
    let w = c.welcome(&tok);
    assert_eq!((w.user.as_str(), w.inbox_tail), ("u4", 2));
    assert_eq!((w.broadcast_epoch, w.broadcast_tail), (w.epoch, 4));
    c.send(&Frame::Join(ringport_proto::RoomRequest {
        req_id: 1,
        room: "quiet".into(),
    }));
    match c.recv() {
        Frame::RoomResult(r) => assert_eq!(
            (r.req_id, r.status, r.epoch, r.tail),
            (1, ringport_proto::Status::OK, w.epoch, 3)
        ),
        other => panic!("{other:?}"),
    }
    post(admin, "/v1/push/room/quiet", "live");
    assert_eq!(c.push().offset, 4);
    let anon = server.client().welcome("");
    assert_eq!((anon.user.as_str(), anon.inbox_tail), ("", 0));
    assert_eq!(anon.broadcast_tail, 4);

    let mut r = server.client();
    r.send(&Frame::Hello(Hello {
        token: bytes::Bytes::from(tok),
        client_info: "refused".into(),
        resume: Some(Resume {
            session_id: w.session_id,
            // At most max_rooms + 2 entries (3 here); user:other is tried below.
            streams: [
                StreamName::Room("secret".into()),
                StreamName::Room("quiet".into()),
                StreamName::Room("more".into()),
            ]
            .into_iter()
            .map(|stream| ResumePoint {
                stream,
                epoch: w.epoch,
                last_offset: 3,
            })
            .collect(),
        }),
    }));
    assert!(matches!(r.recv(), Frame::Welcome(_)));
    let refused = |status| ResumeOutcome::Refused(status);
    for (name, outcome) in [
        ("room:secret", refused(Status::FORBIDDEN)),
        ("room:quiet", ResumeOutcome::Resumed),
    ] {
        match r.recv() {
            Frame::ResumeResult(res) => {
                assert_eq!(
                    (res.stream.to_string(), res.outcome),
                    (name.into(), outcome)
                );
                assert_eq!((res.old_epoch, res.new_epoch), (w.epoch, w.epoch));
            }
            other => panic!("{other:?}"),
        }
    }
    // The snapshot of room:quiet follows its RESUME_RESULT; then room:more, over max_rooms.
    assert_eq!(r.push().offset, 4);
    match r.recv() {
        Frame::ResumeResult(res) => assert_eq!(
            (res.stream.to_string(), res.outcome),
            ("room:more".into(), refused(Status::LIMIT_EXCEEDED))
        ),
        other => panic!("{other:?}"),
    }
    // The refused entry is counted under the same limit as a refused JOIN.
    let body = server.http("GET", "/metrics", "").body;
    assert!(
        metric(
            &body,
            "ringport_limit_hits_total{limit=\"rooms_per_connection\"}"
        ) >= 1
    );
    // Nothing of the refused streams follows.
    post(admin, "/v1/push/room/secret", "no");
    post(admin, "/v1/push/room/more", "no");
    post(admin, "/v1/push/room/quiet", "yes");
    let p = r.push();
    assert_eq!((p.stream.to_string(), p.offset), ("room:quiet".into(), 5));

    // Another user's inbox is refused too (this resume replaces `r`: one connection per
    // session).
    let mut r2 = server.client();
    r2.send(&Frame::Hello(Hello {
        token: bytes::Bytes::from(token("u4", &[])),
        client_info: "refused".into(),
        resume: Some(Resume {
            session_id: w.session_id,
            streams: vec![ResumePoint {
                stream: StreamName::User("other".into()),
                epoch: w.epoch,
                last_offset: 3,
            }],
        }),
    }));
    assert!(matches!(r2.recv(), Frame::Welcome(_)));
    match r2.recv() {
        Frame::ResumeResult(res) => assert_eq!(
            (res.stream.to_string(), res.outcome),
            ("user:other".into(), refused(Status::FORBIDDEN))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.expect_close().0, ringport_proto::CloseReason::REPLACED);
}

/// A client connected before any broadcast it received is cut; broadcasts sent meanwhile
/// reach it exactly once after the reconnect (before WELCOME carried the broadcast tail the
/// SDK had no resume point for `room:*` and lost them silently).
#[test]
fn broadcast_resumes_after_a_cut_before_its_first_message() {
    let server = TestServer::start(test_config());
    let (addr, admin) = (server.addr.to_string(), server.admin_addr);
    // Before the client exists: never delivered to it, never reported as lost.
    post(admin, "/v1/broadcast", "old");
    runtime().block_on(async move {
        let mut o = sdk_options();
        o.backoff.initial = Duration::from_millis(1_500);
        o.backoff.max = o.backoff.initial;
        o.backoff.jitter = 0.0;
        let (c, mut rx) = Client::connect(addr, "", o).await.unwrap();
        c.inject_fault(Fault::Reset).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Event::Disconnected { .. })) => break,
                Ok(Some(Event::Message(m))) => panic!("message before the cut: {m:?}"),
                Ok(Some(_)) => {}
                other => panic!("no disconnect: {other:?}"),
            }
        }
        tokio::task::spawn_blocking(move || {
            for i in 0..3 {
                post(admin, "/v1/broadcast", &format!("cut {i}"));
            }
        })
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut lost = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(Event::Message(m))) => got.push((m.stream, m.offset)),
                Ok(Some(Event::NotRecovered {
                    stream, missing, ..
                })) => lost.push((stream, missing)),
                Ok(Some(_)) => {}
                other => panic!("got {got:?}, lost {lost:?}, then {other:?}"),
            }
        }
        tokio::task::spawn_blocking(move || post(admin, "/v1/broadcast", "live"))
            .await
            .unwrap();
        let m = next_message(&mut rx).await;
        got.push((m.stream, m.offset));
        assert!(lost.is_empty(), "{lost:?}");
        let all = StreamName::Room("*".into());
        let want: Vec<_> = (2..=5).map(|o| (all.clone(), o)).collect();
        assert_eq!(got, want);
        c.close().await;
    });
}
