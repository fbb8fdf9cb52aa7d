//! Connection-level attacks (issue 10, item 9): slowloris, half-open peers, random garbage,
//! an RST storm and slow consumers. Each is bounded in count and time, checks that its limit
//! held, and that a well-behaved client meanwhile got WELCOME within 100 ms and its push.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use ringport_proto::{CloseReason, Frame, Hello};

use super::bystander::bystander_is_served;
use super::secured;
use crate::common::gateway::{token, Client, TestServer};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 20, last])
}

fn quick_handshake() -> ringport::config::Config {
    let mut c = secured();
    c.protocol.handshake_timeout_ms = 300;
    c
}

fn hello_bytes() -> Vec<u8> {
    Frame::Hello(Hello {
        token: bytes::Bytes::from(token("mallory", &[])),
        client_info: "slow/1".into(),
        resume: None,
    })
    .to_bytes()
    .unwrap()
    .to_vec()
}

/// Slowloris and half-open peers: connections that send part of a HELLO, or nothing, hold
/// nothing past `protocol.handshake_timeout_ms` and keep no one else out.
#[test]
fn slowloris_and_silent_peers_are_cut_at_the_handshake_deadline() {
    let server = TestServer::start(quick_handshake());
    let hello = hello_bytes();
    let mut peers: Vec<Client> = (0..60)
        .map(|i| {
            let mut c = Client::connect_from(server.addr, ip(i % 30));
            if i % 2 == 0 {
                // Slowloris: a few bytes of the HELLO, then a trickle.
                c.stream.write_all(&hello[..5]).unwrap();
            }
            c
        })
        .collect();
    bystander_is_served(&server, ip(100), "bystander");
    for (i, c) in peers.iter_mut().enumerate() {
        if i % 2 == 0 {
            let _ = c.stream.write_all(&hello[5..6]);
        }
    }
    for c in &mut peers {
        let (reason, text) = c.expect_close();
        assert_eq!(reason, CloseReason::HANDSHAKE_TIMEOUT, "{text}");
    }
    server.wait_metric("ringport_connections_open{state=\"handshaking\"} 0");
}

/// Random garbage gets a CLOSE naming what was wrong (never a panic or a hang).
#[test]
fn random_garbage_is_closed_with_a_reason() {
    use rand::{Rng, SeedableRng};
    let server = TestServer::start(quick_handshake());
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for i in 0..50u8 {
        let mut c = Client::connect_from(server.addr, ip(i));
        let junk: Vec<u8> = (0..1024).map(|_| rng.random()).collect();
        let _ = c.stream.write_all(&junk);
        let (reason, text) = c.expect_close();
        assert!(
            [
                CloseReason::PROTOCOL_ERROR,
                CloseReason::UNSUPPORTED_VERSION,
                CloseReason::FRAME_TOO_LARGE,
                CloseReason::HANDSHAKE_TIMEOUT,
            ]
            .contains(&reason),
            "{reason:?} {text}"
        );
    }
    bystander_is_served(&server, ip(101), "bystander");
    server.wait_metric("ringport_connections_open{state=\"handshaking\"} 0");
}

/// An RST storm: connections reset mid-handshake and mid-session leave nothing behind.
#[test]
fn an_rst_storm_leaves_nothing_behind() {
    let mut config = quick_handshake();
    // One user resets a hundred sessions in a row faster than closes are processed; the
    // per-user cap is not what is tested here.
    config.limits.max_connections_per_user = 0;
    let server = TestServer::start(config);
    let hello = hello_bytes();
    for i in 0..300u32 {
        let mut c = Client::connect_from(server.addr, ip((i % 50) as u8));
        match i % 3 {
            0 => {}
            1 => c.stream.write_all(&hello[..10]).unwrap(),
            _ => {
                c.stream.write_all(&hello).unwrap();
                assert!(matches!(c.recv(), Frame::Welcome(_)));
            }
        }
        socket2::SockRef::from(&c.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    bystander_is_served(&server, ip(102), "bystander");
    server.wait_metric("ringport_connections_open{state=\"handshaking\"} 0");
    server.wait_metric("ringport_connections_open{state=\"active\"} 0");
}

/// Slow consumers: a client that stops reading is closed at `engine.send_high_water`, while
/// a client that reads gets every message. The slow one is told why: its backlog is dropped
/// and a CLOSE POLICY follows the whole frames the kernel already held.
#[test]
fn a_slow_consumer_is_closed_and_readers_get_everything() {
    let mut config = secured();
    config.engine.send_high_water = 1 << 20;
    // It reads only at the end: a loaded machine must not cut its CLOSE off by the linger.
    config.engine.close_linger_ms = 60_000;
    config.history.max_messages_per_stream = 1;
    let server = TestServer::start(config);
    let mut slow = Client::connect_from(server.addr, ip(103));
    socket2::SockRef::from(&slow.stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    slow.welcome(&token("slow", &["feed"]));
    assert_eq!(slow.join(1, "feed"), ringport_proto::Status::OK);
    let mut reader = Client::connect_from(server.addr, ip(104));
    reader.welcome(&token("reader", &["feed"]));
    assert_eq!(reader.join(1, "feed"), ringport_proto::Status::OK);
    // 200 × 60 KB = 12 MB: more than the high-water mark plus what the kernel buffers.
    // The pushes follow the reader (at most LEAD ahead of what it has read), so the reader's
    // queue stays far below the mark however slowly a loaded machine runs its thread.
    const N: usize = 200;
    const LEAD: usize = 4;
    let body = format!(r#"{{"payload":"{}"}}"#, "y".repeat(60_000));
    let mut reader = crate::common::gateway::push_at_readers_pace(
        N,
        LEAD,
        reader,
        |r, _| {
            r.push();
        },
        || {
            let r = server.http("POST", "/v1/push/room/feed", &body);
            assert_eq!(r.status, 200, "{}", r.body);
        },
    );
    let metrics = server.wait_metric("ringport_connections_open{state=\"active\"} 1");
    reader.send(&Frame::Ping { nonce: 5 });
    assert_eq!(
        reader.recv(),
        Frame::Pong { nonce: 5 },
        "the reader is the one kept"
    );
    assert!(
        crate::common::gateway::metric(
            &metrics,
            "ringport_connections_closed_total{reason=\"slow_consumer\"}"
        ) >= 1,
        "{metrics}"
    );
    bystander_is_served(&server, ip(105), "bystander");
    let (reason, text, pushes) = super::pushes_then_close(&mut slow);
    assert_eq!(reason, CloseReason::POLICY, "{text}");
    assert!(text.contains("slow consumer"), "{text}");
    assert!(
        pushes < N,
        "its backlog was dropped: {pushes} of {N} arrived"
    );
    drop((slow, reader));
}
