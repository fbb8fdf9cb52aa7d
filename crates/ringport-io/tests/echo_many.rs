//! Many concurrent connections echoing random-sized payloads, verified byte for byte.

mod common;

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{pattern, pump, wait_at_rest, Flow};
use ringport_io::{EngineConfig, IoBackend};

/// Sizes spread over 1 B ..= 1 MiB, log-uniformly, with every 50th exactly 1 MiB.
fn size_of(i: usize, seed: u64) -> usize {
    if i % 50 == 0 {
        return 1 << 20;
    }
    let r = pattern(seed ^ i as u64, 8);
    let r = u64::from_le_bytes(r.try_into().unwrap());
    let bits = (r % 21) as u32; // 0..=20
    let base = 1usize << bits;
    (base + (r >> 8) as usize % base).min(1 << 20)
}

/// Runs `conns` echo flows split over `threads` client threads against `cfg`; the counters
/// at rest and the backend that ran.
fn echo_flows(
    cfg: EngineConfig,
    conns: usize,
    threads: usize,
) -> (ringport_io::StatsSnapshot, IoBackend) {
    let (engine, log, addr) = common::start_echo(cfg);
    let seed = 0x1234_5678;
    let deadline = Instant::now() + Duration::from_secs(240);
    let received = std::sync::Arc::new(AtomicU64::new(0));
    let per = conns / threads;
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let received = received.clone();
            std::thread::spawn(move || {
                let mut flows: Vec<Flow> = (t * per..(t + 1) * per)
                    .map(|i| Flow::connect(addr, pattern(seed + i as u64, size_of(i, seed))))
                    .collect();
                pump(&mut flows, deadline, &received, Flow::echoed);
                flows.iter().map(|f| f.out.len() as u64).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let h = engine.handle();
    let backend = h.backend().backend;
    let s = common::totals(&h);
    assert_eq!(s.accepted, (per * threads) as u64);
    assert_eq!(s.bytes_in, total);
    // All clients are gone (sockets dropped when the threads ended): the engine comes back
    // to rest, every connection closed by its peer.
    wait_at_rest(&h);
    let s = common::totals(&h);
    assert_eq!(s.closed_total(), (per * threads) as u64, "{s:?}");
    assert_eq!(s.bytes_out, total);
    assert_eq!(
        log.closes_with(ringport_io::CloseReason::PeerClosed),
        per * threads,
        "every close is the peer's FIN"
    );
    engine.shutdown();
    common::join_within(engine, common::DEADLINE);
    (s, backend)
}

#[test]
fn thousand_connections_echo_random_sizes_byte_for_byte() {
    let cfg = EngineConfig {
        workers: 2,
        ..Default::default()
    };
    let (s, _) = echo_flows(cfg, 1000, 8);
    assert!(
        s.bytes_out > 1 << 26,
        "a real amount of data moved: {}",
        s.bytes_out
    );
}

/// A receive buffer ring far too small for the load: receives stop with ENOBUFS and must be
/// re-armed once buffers return, never lost and never spun on.
#[test]
fn tiny_buffer_ring_rearms_after_enobufs() {
    let cfg = EngineConfig {
        workers: 1,
        recv_buffers: 4,
        recv_buffer_size: 256,
        ..Default::default()
    };
    let (s, _) = echo_flows(cfg, 64, 2);
    assert!(
        s.bufring_exhausted > 0,
        "the test must exercise ENOBUFS: {s:?}"
    );
    // A receive that ENOBUFS ended is armed again, and counted again.
    assert!(s.recv_arms > s.accepted, "re-arms counted: {s:?}");
}

/// Ping-pong of small messages, a buffer ring large enough for every connection: each
/// connection's receive is armed once and stays armed (multishot; epoll keeps its interest),
/// no completion queue overflows, and the shard enters the kernel once per loop turn.
#[test]
fn steady_echo_arms_each_receive_once_and_enters_once_per_turn() {
    use std::io::{Read, Write};
    const CONNS: usize = 16;
    const ROUNDS: usize = 200;
    let cfg = EngineConfig {
        workers: 1,
        ..Default::default()
    };
    let (engine, _log, addr) = common::start_echo(cfg);
    let h = engine.handle();
    let mut socks: Vec<std::net::TcpStream> = (0..CONNS)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(common::DEADLINE)).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..ROUNDS {
        for s in &mut socks {
            s.write_all(&msg).expect("send");
        }
        for s in &mut socks {
            s.read_exact(&mut back).expect("echo");
            assert_eq!(back, msg);
        }
    }
    drop(socks);
    common::wait_at_rest(&h);
    let s = common::totals(&h);
    let backend = h.backend().backend;
    assert_eq!(s.accepted, CONNS as u64);
    assert_eq!(s.bytes_in, (CONNS * ROUNDS * 64) as u64);
    assert_eq!(s.bufring_exhausted, 0, "{s:?}");
    assert_eq!(s.cq_overflows, 0, "{backend}: {s:?}");
    assert_eq!(s.recv_arms, CONNS as u64, "{backend}: one arm each: {s:?}");
    // The gauge is refreshed before each wait, so it may trail the turn counter by one.
    assert!(
        s.kernel_enters.abs_diff(s.loops) <= 1 && s.loops > 0,
        "{backend}: one enter per turn: {s:?}"
    );
    engine.shutdown();
    common::join_within(engine, common::DEADLINE);
}

/// A ring far too small for the load: the submission queue fills mid-turn (early submits)
/// and the completion queue overflows into the kernel's backlog; nothing may be lost.
#[test]
fn tiny_ring_survives_full_submission_and_completion_queues() {
    let cfg = EngineConfig {
        workers: 1,
        ring_entries: 8,
        recv_buffer_size: 1024,
        ..Default::default()
    };
    let (s, backend) = echo_flows(cfg, 128, 4);
    // Counted: io_uring's completion queue overflowed (epoll has none), and the early submits
    // are enters beyond one per turn.
    match backend {
        IoBackend::Epoll => assert_eq!(s.cq_overflows, 0, "{s:?}"),
        _ => {
            assert!(s.cq_overflows > 0, "the CQ must overflow here: {s:?}");
            assert!(s.kernel_enters > s.loops, "early submits counted: {s:?}");
        }
    }
}
