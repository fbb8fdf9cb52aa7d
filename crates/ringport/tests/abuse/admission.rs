//! Admission (issue 10, items 4 and 5): per-IP, per-user and per-connection limits, and the
//! process-wide connection cap. Distinct peers are distinct loopback source addresses
//! (127.0.0.0/8), with the loopback exemption turned off.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ringport::config::IoBackendMode;
use ringport_proto::{CloseReason, Frame, RoomRequest, Status};

use super::bystander::bystander_is_served;
use super::{secured, wait_limit_hits};
use crate::common::gateway::{test_config, token, Client, TestServer};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 10, last])
}

/// Limits as configured, the per-IP ones applying to loopback peers. Every refusal is
/// answered (these tests read its reason) unless `f` sets
/// `refusals_answered_per_ip_per_sec`.
fn limited(f: impl FnOnce(&mut ringport::config::LimitsConfig)) -> ringport::config::Config {
    let mut c = secured();
    c.auth.allow_anonymous = Some(true);
    c.limits.exempt_loopback = false;
    c.limits.refusals_answered_per_ip_per_sec = 0;
    f(&mut c.limits);
    c
}

/// Connects from `from` and says HELLO with `tok` until WELCOME comes back, for a place
/// that frees asynchronously (a close is processed on its shard); every refusal meanwhile
/// must be CLOSE POLICY mentioning `refusal`.
pub(crate) fn welcome_eventually(
    server: &TestServer,
    from: IpAddr,
    tok: &str,
    refusal: &str,
) -> Client {
    let deadline = Instant::now() + crate::common::gateway::WAIT;
    loop {
        let mut c = Client::connect_from(server.addr, from);
        match c.hello(tok) {
            Frame::Welcome(_) => return c,
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::POLICY, "{text}");
                assert!(
                    text.contains(refusal),
                    "{text:?} should mention {refusal:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "still refused: {refusal}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Says an anonymous HELLO and checks that the answer is CLOSE POLICY with `text` in its
/// text.
fn hello_refused(c: &mut Client, text: &str) {
    match c.hello("") {
        Frame::Close { reason, text: got } => {
            assert_eq!(reason, CloseReason::POLICY, "{got}");
            assert!(got.contains(text), "{got:?} should mention {text:?}");
        }
        other => panic!("expected CLOSE POLICY ({text}), got {other:?}"),
    }
}

/// Says an anonymous HELLO and reads the answer: `None` when the server closed the
/// connection without one (end of stream or a reset, also when the HELLO's write failed).
fn hello_or_eof(c: &mut Client) -> Option<Frame> {
    use std::io::Write;
    let hello = Frame::Hello(ringport_proto::Hello {
        token: Default::default(),
        client_info: "test/1".into(),
        resume: None,
    });
    c.stream.write_all(&hello.to_bytes().unwrap()).ok()?;
    c.next()
}

/// Reads until CLOSE and checks it is POLICY with `text` in its text.
fn expect_policy(c: &mut Client, text: &str) {
    let (reason, got) = c.expect_close();
    assert_eq!(reason, CloseReason::POLICY, "{got}");
    assert!(got.contains(text), "{got:?} should mention {text:?}");
}

/// Observed: 10,000 connections from one IP all got WELCOME; with a cap of 2 × 2,500 one IP
/// took every slot and a client from another IP timed out.
#[test]
fn connections_per_ip_are_capped_and_released_on_close() {
    let server = TestServer::start(limited(|l| {
        l.max_connections_per_ip = 5;
        l.handshakes_per_ip_per_sec = 0;
    }));
    let mut held: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = Client::connect_from(server.addr, ip(1));
            c.welcome("");
            c
        })
        .collect();
    for _ in 0..3 {
        let mut c = Client::connect_from(server.addr, ip(1));
        expect_policy(&mut c, "too many connections from this address");
    }
    wait_limit_hits(&server, "connections_per_ip", 3);
    bystander_is_served(&server, ip(2), "bystander");
    // A closed connection frees its place (released on the shard's close, so poll).
    drop(held.pop());
    welcome_eventually(&server, ip(1), "", "too many connections from this address");
}

/// Observed: 28,692 handshakes/s from one IP were all served.
#[test]
fn handshakes_per_ip_are_rate_limited() {
    let server = TestServer::start(limited(|l| {
        l.handshakes_per_ip_per_sec = 1;
        l.handshake_burst_per_ip = 4;
    }));
    let mut refused = 0;
    for _ in 0..20 {
        let mut c = Client::connect_from(server.addr, ip(3));
        match c.hello("") {
            Frame::Welcome(_) => {}
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::POLICY, "{text}");
                assert!(text.contains("new connections"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The burst (4) and at most a few refills during the loop get through.
    assert!(refused >= 10, "only {refused} of 20 refused");
    wait_limit_hits(&server, "handshake_rate", 10);
    bystander_is_served(&server, ip(4), "bystander");
}

/// Measured (docs/benchmarks.md, issue 10): under a PING flood ~11,000 reconnects a second
/// were refused for `handshake_rate`, each with a CLOSE POLICY, a FIN exchange (our
/// shutdown runs in a kernel worker thread) and the linger. Only the first
/// `limits.refusals_answered_per_ip_per_sec` refusals of an address per second are
/// answered; the rest are closed at once, without a frame.
#[test]
fn refusals_past_the_answered_ones_are_closed_at_once() {
    let server = TestServer::start(limited(|l| {
        l.handshakes_per_ip_per_sec = 1;
        l.handshake_burst_per_ip = 1;
        l.refusals_answered_per_ip_per_sec = 1;
    }));
    let mut first = Client::connect_from(server.addr, ip(7));
    first.welcome("");
    // The address's one answer for this second, then (well within that second: a refusal
    // takes a loopback round trip) closes without a CLOSE frame.
    hello_refused(
        &mut Client::connect_from(server.addr, ip(7)),
        "new connections",
    );
    let mut silent = 0u64;
    for _ in 0..5 {
        let mut c = Client::connect_from(server.addr, ip(7));
        match hello_or_eof(&mut c) {
            None => silent += 1,
            // A second passed on a slow machine: the address earned one more answer.
            Some(Frame::Close { reason, text }) => {
                assert_eq!(reason, CloseReason::POLICY, "{text}")
            }
            Some(other) => panic!("a refused address got {other:?}"),
        }
    }
    assert!(silent >= 3, "only {silent} of 5 refusals closed unanswered");
    wait_limit_hits(&server, "refusal_unanswered", silent);
    wait_limit_hits(&server, "handshake_rate", silent + 1);
    bystander_is_served(&server, ip(8), "bystander");
}

/// Measured (docs/benchmarks.md, issue 10): a resume flood whose 1.6 MB HELLOs were refused
/// with CLOSE POLICY made the server read and discard a whole `engine.close_discard_max_bytes`
/// (1 MiB) per refusal, 5,774 of them in 15 s. A connection refused before its WELCOME may
/// send a handshake's worth (128 KiB) after our answer; past it the close is cut short.
#[test]
fn a_peer_refused_before_welcome_is_cut_short_after_a_handshakes_worth() {
    use std::io::Write;
    let server = TestServer::start(limited(|l| {
        l.handshakes_per_ip_per_sec = 1;
        l.handshake_burst_per_ip = 1;
    }));
    let mut first = Client::connect_from(server.addr, ip(9));
    first.welcome("");
    let mut refused = Client::connect_from(server.addr, ip(9));
    hello_refused(&mut refused, "new connections");
    // 512 KiB more, well within the configured budget, far over a handshake's worth. The
    // server's reset may fail a write: that is the cut.
    let chunk = vec![0u8; 16 << 10];
    for _ in 0..32 {
        if refused.stream.write_all(&chunk).is_err() {
            break;
        }
    }
    server.wait_metric("ringport_closes_cut_short_total 1");
    bystander_is_served(&server, ip(10), "bystander");
}

/// Observed: 10,000 failed HELLOs at 2,000/s were all served.
#[test]
fn failed_handshakes_throttle_the_address() {
    let server = TestServer::start(limited(|l| {
        l.auth_failures_per_ip_per_sec = 1;
        l.auth_failure_burst_per_ip = 3;
    }));
    let mut c = Client::connect_from(server.addr, ip(5));
    let first = c.hello("not-a-token");
    assert!(
        matches!(first, Frame::Close { reason, .. } if reason == CloseReason::AUTH_FAILED),
        "{first:?}"
    );
    // Failures spend the address's tokens; once they are gone, its new connections are
    // refused before their HELLO is even looked at (a valid token does not help).
    let deadline = Instant::now() + crate::common::gateway::WAIT;
    loop {
        let mut c = Client::connect_from(server.addr, ip(5));
        match c.hello("not-a-token") {
            Frame::Close { reason, .. } if reason == CloseReason::AUTH_FAILED => {}
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::POLICY, "{text}");
                assert!(text.contains("failed handshakes"), "{text}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "failed handshakes never throttled"
        );
    }
    let mut good = Client::connect_from(server.addr, ip(5));
    let answer = good.hello(&token("alice", &[]));
    assert!(
        matches!(answer, Frame::Close { reason, .. } if reason == CloseReason::POLICY),
        "{answer:?}"
    );
    wait_limit_hits(&server, "auth_failures", 2);
    bystander_is_served(&server, ip(6), "bystander");
}

#[test]
fn connections_per_user_are_capped_across_shards() {
    let server = TestServer::start(limited(|l| l.max_connections_per_user = 3));
    let tok = token("alice", &[]);
    // From several addresses, so they spread over both shards.
    let mut held: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::connect_from(server.addr, ip(10 + i));
            c.welcome(&tok);
            c
        })
        .collect();
    for i in 0..4 {
        let mut c = Client::connect_from(server.addr, ip(20 + i));
        let answer = c.hello(&tok);
        match answer {
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::POLICY, "{text}");
                assert!(text.contains("this user"), "{text}");
            }
            other => panic!("expected CLOSE POLICY, got {other:?}"),
        }
    }
    wait_limit_hits(&server, "connections_per_user", 4);
    bystander_is_served(&server, ip(30), "bob");
    drop(held.pop());
    welcome_eventually(&server, ip(31), &tok, "this user");
}

/// Observed: one connection did ~200,000 JOIN+LEAVE per second.
#[test]
fn join_leave_floods_get_rate_limited_then_closed() {
    let server = TestServer::start(limited(|l| {
        l.room_ops_per_sec = 1;
        l.room_ops_burst = 5;
    }));
    let mut c = Client::connect_from(server.addr, ip(40));
    c.welcome("");
    let mut statuses = Vec::new();
    // Pipelined: far more than burst + refill, without reading.
    for i in 0..40u32 {
        c.send(&Frame::Join(RoomRequest {
            req_id: i,
            room: format!("r{i}"),
        }));
    }
    let close = loop {
        match c.next() {
            Some(Frame::RoomResult(r)) => statuses.push(r.status),
            Some(Frame::Close { reason, text }) => break (reason, text),
            Some(_) => {}
            None => panic!("closed without CLOSE"),
        }
    };
    assert_eq!(close.0, CloseReason::POLICY, "{}", close.1);
    let ok = statuses.iter().filter(|s| **s == Status::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == Status::RATE_LIMITED)
        .count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert!(limited >= 5, "{statuses:?}");
    wait_limit_hits(&server, "room_op_rate", 5);
    wait_limit_hits(&server, "control_rate", 1);
    bystander_is_served(&server, ip(41), "bystander");
}

/// Writes `n` PINGs in one go. The server may close before it has read them all: a failed
/// write is fine.
fn send_pings(c: &mut Client, n: u64) {
    use std::io::Write;
    let mut flood = Vec::new();
    for nonce in 0..n {
        flood.extend_from_slice(&Frame::Ping { nonce }.to_bytes().unwrap());
    }
    let _ = c.stream.write_all(&flood);
}

/// Observed: two reading PING flooders drove the server to 156% CPU.
#[test]
fn control_frame_floods_are_closed_with_policy() {
    let server = TestServer::start(limited(|l| {
        l.control_frames_per_sec = 10;
        l.control_frames_burst = 20;
    }));
    let mut c = Client::connect_from(server.addr, ip(50));
    c.welcome("");
    send_pings(&mut c, 200);
    let mut pongs = 0;
    let close = loop {
        match c.next() {
            Some(Frame::Pong { .. }) => pongs += 1,
            Some(Frame::Close { reason, text }) => break (reason, text),
            Some(_) => {}
            None => panic!("closed without CLOSE"),
        }
    };
    assert_eq!(close.0, CloseReason::POLICY, "{}", close.1);
    assert!(close.1.contains("control frames"), "{}", close.1);
    assert!(pongs <= 21, "{pongs} PINGs answered with a burst of 20");
    bystander_is_served(&server, ip(51), "bystander");
}

/// Measured (docs/benchmarks.md, issue 10): PING flooders closed for `control_rate`
/// reconnected at once and got a fresh burst of 2,000 answered PINGs each time, ~10,000
/// connections in 15 s, well within their addresses' handshake rate. A close for abuse now
/// costs the address `limits.handshakes_per_abusive_close` new-connection tokens.
#[test]
fn a_control_flood_close_costs_the_address_its_reconnects() {
    let server = TestServer::start(limited(|l| {
        l.control_frames_per_sec = 10;
        l.control_frames_burst = 20;
        crate::common::gateway::abuse_costs_a_burst(l);
    }));
    let mut c = Client::connect_from(server.addr, ip(52));
    c.welcome("");
    send_pings(&mut c, 200);
    expect_policy(&mut c, "control frames");
    wait_limit_hits(&server, "abusive_close", 1);
    // The flooder's address cannot come back for a fresh burst; 999 handshake tokens were
    // left before the close, so without the cost this would be WELCOME.
    hello_refused(
        &mut Client::connect_from(server.addr, ip(52)),
        "new connections",
    );
    // Other addresses are not affected.
    bystander_is_served(&server, ip(53), "bystander");
}

/// Measured (docs/benchmarks.md, issue 10): PING flooders closed for `control_rate` kept
/// sending, and ~1,400 of the 1,600 closes of a 15 s flood read and discarded a whole
/// `engine.close_discard_max_bytes` (1 MiB) first. A connection closed for abuse may send a
/// handshake's worth (128 KiB) after our answer, as one refused before WELCOME may.
#[test]
fn a_flooder_closed_for_abuse_is_cut_short_after_a_handshakes_worth() {
    let server = TestServer::start(limited(|l| {
        l.control_frames_per_sec = 10;
        l.control_frames_burst = 20;
    }));
    let mut c = Client::connect_from(server.addr, ip(70));
    c.welcome("");
    send_pings(&mut c, 200);
    expect_policy(&mut c, "control frames");
    // 512 KiB of PINGs more (65,536 of them), well within the configured budget.
    send_pings(&mut c, 65_536);
    server.wait_metric("ringport_closes_cut_short_total 1");
    bystander_is_served(&server, ip(71), "bystander");
}

/// Measured (docs/benchmarks.md, "Unanswered refusals and control turns"): floods of
/// oversized headers and random bytes took 92–96% of the server's core. Each connection
/// stayed within its address's handshake rate and was answered FRAME_TOO_LARGE or
/// UNSUPPORTED_VERSION. Bytes that break the protocol now cost the address
/// `limits.handshakes_per_abusive_close` new-connection tokens, as a rate flood does; a later
/// version's HELLO (a negotiation, protocol.md §10) costs nothing.
#[test]
fn bytes_that_break_the_protocol_cost_the_address_its_reconnects() {
    use std::io::Write;
    let server = TestServer::start(limited(|l| {
        crate::common::gateway::abuse_costs_a_burst(l);
    }));
    let header = |version: u8, op: u8, len: u32| {
        let l = len.to_be_bytes();
        [version, op, 0, 0, l[0], l[1], l[2], l[3]]
    };
    let hello = ringport_proto::Op::Hello as u8;
    let cases: [(u8, [u8; 8], CloseReason); 2] = [
        (54, header(1, hello, u32::MAX), CloseReason::FRAME_TOO_LARGE),
        (
            55,
            header(0xc7, 0x5e, 0x0a0b_0c0d),
            CloseReason::UNSUPPORTED_VERSION,
        ),
    ];
    for (n, (last, bytes, expected)) in cases.into_iter().enumerate() {
        let mut c = Client::connect_from(server.addr, ip(last));
        c.stream.write_all(&bytes).unwrap();
        let (reason, text) = c.expect_close();
        assert_eq!(reason, expected, "{text}");
        wait_limit_hits(&server, "abusive_close", n as u64 + 1);
        hello_refused(
            &mut Client::connect_from(server.addr, ip(last)),
            "new connections",
        );
    }
    // A version 2 HELLO is told the supported versions, and its address may go on at once
    // (charged, it would owe a whole burst, as above).
    let mut c = Client::connect_from(server.addr, ip(56));
    c.stream.write_all(&header(2, hello, 0)).unwrap();
    let (reason, text) = c.expect_close();
    assert_eq!(reason, CloseReason::UNSUPPORTED_VERSION, "{text}");
    assert_eq!(text, "supported versions: 1");
    Client::connect_from(server.addr, ip(56)).welcome("");
    bystander_is_served(&server, ip(57), "bystander");
}

/// Measured (docs/benchmarks.md, "Every attack with the defaults of 2026-12-04"): a publish
/// flood of short-lived connections from 64 addresses took 97% of the server's core, every
/// connection spending a fresh per-connection burst (`rooms.publish_burst`) of 60 KB
/// publishes. An address's publish budget (`limits.publish_bytes_per_ip_per_sec`) now spans
/// all its connections.
#[test]
fn an_address_publish_budget_spans_its_connections() {
    let mut config = limited(|l| {
        l.publish_bytes_per_ip_per_sec = 1000;
        l.publish_burst_bytes_per_ip = 65_536;
    });
    config.rooms.publish_rate_per_sec = 1000;
    config.rooms.publish_burst = 1000;
    let server = TestServer::start(config);
    let ack = |c: &mut Client, seq: u64, len: usize| {
        c.publish("r", seq, &vec![b'p'; len]);
        loop {
            match c.recv() {
                Frame::PublishAck(a) => {
                    assert_eq!(a.seq, seq);
                    return a.status;
                }
                Frame::Push(_) => {} // its own accepted publish comes back too
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let joined = |last: u8| {
        let mut c = Client::connect_from(server.addr, ip(last));
        c.welcome("");
        assert_eq!(c.join(1, "r"), Status::OK);
        c
    };
    // The burst (64 KiB) takes four 16,000-byte publishes on one connection...
    let mut a = joined(60);
    for seq in 1..=4 {
        assert_eq!(ack(&mut a, seq, 16_000), Status::OK, "publish {seq}");
    }
    // ...and a fresh connection from the same address gets none of it back (1,000 bytes
    // a second refill; 16,000 take 16 s).
    let mut b = joined(60);
    assert_eq!(ack(&mut b, 1, 16_000), Status::RATE_LIMITED);
    assert_eq!(ack(&mut a, 5, 16_000), Status::RATE_LIMITED);
    wait_limit_hits(&server, "publish_bytes", 2);
    // Another address has its own budget.
    let mut c = joined(61);
    assert_eq!(ack(&mut c, 1, 16_000), Status::OK);
    bystander_is_served(&server, ip(62), "bystander");
}

/// Observed (docs/benchmarks.md, the publish flood): a publisher over its address's budget
/// was still read as fast as it sent, its publishes refused one by one, ~97% of the
/// server's core spent on it. Now a refused publisher is not read again until its tokens are
/// back: TCP's window stops it, and what it can hand the kernel in 3 s is bounded by the
/// budget and the socket buffers, not by how fast the server reads.
#[test]
fn a_publisher_over_its_budget_is_not_read_until_it_has_the_tokens() {
    publisher_is_held_back(IoBackendMode::Uring, 63);
}

/// The same on epoll, whose receive is cancelled in the driver.
#[test]
fn a_publisher_over_its_budget_is_held_back_on_epoll_too() {
    publisher_is_held_back(IoBackendMode::Epoll, 64);
}

fn publisher_is_held_back(backend: IoBackendMode, from: u8) {
    use std::io::Write;
    let mut config = limited(|l| {
        l.publish_bytes_per_ip_per_sec = 65_536;
        l.publish_burst_bytes_per_ip = 65_536;
    });
    config.engine.io_backend = backend;
    config.rooms.publish_rate_per_sec = 1000;
    config.rooms.publish_burst = 1000;
    let server = TestServer::start(config);
    let mut c = Client::connect_from(server.addr, ip(from));
    c.welcome("");
    assert_eq!(c.join(1, "r"), Status::OK);
    // Each publish a new `seq` (a repeated one is answered from the idempotency record).
    let publish = |seq: u64| {
        Frame::Publish(ringport_proto::Publish {
            room: "r".into(),
            seq,
            payload: bytes::Bytes::from(vec![b'f'; 60_000]),
        })
        .to_bytes()
        .unwrap()
    };
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let (mut written, mut seq, mut frame, mut at) = (0usize, 1, publish(1), 0);
    while Instant::now() < until {
        match w.write(&frame[at..]) {
            Ok(n) => {
                written += n;
                at += n;
                if at == frame.len() {
                    seq += 1;
                    (frame, at) = (publish(seq), 0);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the publisher was cut off: {e}"),
        }
    }
    eprintln!("{backend:?}: the publisher handed the kernel {written} bytes in 3 s");
    // Budget: 64 KiB of burst and 64 KiB/s. The rest is what the socket buffers hold (a
    // few MiB each way on loopback) and what a receive takes before its pause lands.
    assert!(
        written < 48 << 20,
        "{backend:?}: the server read {written} bytes of publishes in 3 s from an address allowed 64 KiB/s"
    );
    let body = server.http("GET", "/metrics", "").body;
    let pauses: u64 = body
        .lines()
        .filter_map(|l| l.strip_prefix("ringport_shard_recv_pauses_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(pauses > 0, "no pause counted:\n{body}");
    wait_limit_hits(&server, "publish_bytes", 1);
    // The publisher is held back, not cut off: its refusals are answered, and no CLOSE.
    match c.recv() {
        Frame::PublishAck(a) => assert!(
            a.status == Status::OK || a.status == Status::RATE_LIMITED,
            "{a:?}"
        ),
        Frame::Push(_) => {}
        other => panic!("unexpected {other:?}"),
    }
    bystander_is_served(&server, ip(62), "bystander");
}

/// The per-IP limits do not apply to loopback peers by default (a local proxy makes every
/// client loopback).
#[test]
fn loopback_is_exempt_from_per_ip_limits_by_default() {
    let mut config = test_config();
    config.limits.max_connections_per_ip = 2;
    let server = TestServer::start(config);
    let _held: Vec<Client> = (0..4).map(|_| server.welcomed("")).collect();
}

/// Observed: at the connection cap excess clients sat in the kernel backlog with no answer,
/// and after slots freed 3 of 100 waiters were never served while the other shard had 3 free
/// slots. Now the cap is process-wide: every client up to it is served whichever shard the
/// kernel hands it to, and one over it is told "server full" and closed at once.
#[test]
fn at_the_cap_excess_gets_server_full_and_any_shard_serves_up_to_it() {
    let mut config = test_config();
    config.engine.max_connections_per_shard = 4;
    let server = TestServer::start(config);
    // 8 = 4 per shard × 2 shards, whatever the kernel's SO_REUSEPORT hash does with them
    // (with 8 of them, all 4/4 is unlikely: a per-shard cap would leave some unanswered).
    let mut held: Vec<Client> = (0..8)
        .map(|i| {
            let mut c = Client::connect_from(server.addr, ip(60 + i));
            c.stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            c.welcome("");
            c
        })
        .collect();
    for i in 0..5 {
        let mut c = Client::connect_from(server.addr, ip(70 + i));
        c.stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        expect_policy(&mut c, "server full");
    }
    wait_limit_hits(&server, "server_full", 5);
    // Freed places are taken by the next clients, whichever shard they land on.
    drop(held.drain(..3));
    for k in 0..3 {
        held.push(welcome_eventually(&server, ip(80 + k), "", "server full"));
    }
    server.wait_metric("ringport_connections_open{state=\"active\"} 8");
}
