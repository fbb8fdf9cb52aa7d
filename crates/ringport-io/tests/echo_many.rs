//! Many concurrent connections echoing random-sized payloads, verified byte for byte.

mod common;

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{pattern, pump, start, wait_at_rest, Behaviour, Flow};
use ringport_io::EngineConfig;

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

/// Runs `conns` echo flows split over `threads` client threads against `cfg`.
fn echo_flows(cfg: EngineConfig, conns: usize, threads: usize) -> ringport_io::StatsSnapshot {
    let (engine, log, addr) = start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
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
    s
}

#[test]
fn thousand_connections_echo_random_sizes_byte_for_byte() {
    let cfg = EngineConfig {
        workers: 2,
        ..Default::default()
    };
    let s = echo_flows(cfg, 1000, 8);
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
    let s = echo_flows(cfg, 64, 2);
    assert!(
        s.bufring_exhausted > 0,
        "the test must exercise ENOBUFS: {s:?}"
    );
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
    echo_flows(cfg, 128, 4);
}
