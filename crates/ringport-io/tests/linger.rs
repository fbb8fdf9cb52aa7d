//! The bounds of a graceful close: a peer that neither reads nor closes is cut off after
//! `close_linger`, and a shutdown is cut off after `shutdown_timeout`, with every slot and
//! operation released.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{start, totals, wait_until, Behaviour, DEADLINE};
use ringport_io::{CloseReason, EngineConfig};

/// Room for everything the stuck client wrote before the close, which the engine reads
/// (and discards) after its FIN: these tests are about the linger and the shutdown deadline,
/// not about `close_discard_max_bytes` (`fake_tests` covers that).
const STUCK_PEER_SENT: u32 = 64 << 20;

/// A client that sends a lot and never reads: its echo backs up in the engine's queue.
fn stuck_client(addr: std::net::SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut c = TcpStream::from(s);
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    // Until the engine stops reading us (its queue is full of echo we do not read).
    for _ in 0..64 {
        if c.write_all(&chunk).is_err() {
            break;
        }
    }
    c
}

#[test]
fn graceful_close_of_a_stuck_peer_is_forced_after_close_linger() {
    let cfg = EngineConfig {
        workers: 1,
        close_linger: Duration::from_millis(300),
        close_discard_max_bytes: STUCK_PEER_SENT,
        ..Default::default()
    };
    let (engine, log, addr) = start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
    let h = engine.handle();
    let c = stuck_client(addr);
    wait_until("echo backed up in the engine", DEADLINE, || {
        let s = totals(&h);
        s.open == 1 && s.bytes_in > s.bytes_out
    });
    let id = log.opens()[0];
    let t0 = Instant::now();
    h.close(id, CloseReason::Local);
    wait_until("the slot freed after the linger", DEADLINE, || {
        let s = totals(&h);
        s.slots_used == 0 && s.inflight_ops == 0
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "not before the linger"
    );
    assert_eq!(log.close_reason(id), Some(CloseReason::Local));
    drop(c);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn shutdown_with_a_stuck_peer_ends_after_shutdown_timeout() {
    let cfg = EngineConfig {
        workers: 1,
        close_linger: Duration::from_secs(600),
        shutdown_timeout: Duration::from_millis(400),
        close_discard_max_bytes: STUCK_PEER_SENT,
        ..Default::default()
    };
    let (engine, log, addr) = start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
    let h = engine.handle();
    let c = stuck_client(addr);
    wait_until("echo backed up in the engine", DEADLINE, || {
        let s = totals(&h);
        s.open == 1 && s.bytes_in > s.bytes_out
    });
    let t0 = Instant::now();
    engine.shutdown();
    common::join_within(engine, DEADLINE);
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "the queue had its time to drain"
    );
    assert_eq!(log.closes_with(CloseReason::Shutdown), 1);
    let s = totals(&h);
    assert_eq!((s.open, s.slots_used), (0, 0));
    drop(c);
}
