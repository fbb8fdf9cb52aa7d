//! Ten thousand idle connections: opened, held, closed, with no slot or descriptor leak.
//! Its own test binary: it counts the process's descriptors.

mod common;

use std::net::TcpStream;

use common::{fd_count, start, totals, wait_until, Behaviour, DEADLINE};
use ringport_io::EngineConfig;

const N: usize = 10_000;

#[test]
fn ten_thousand_idle_connections_open_hold_close_without_leaks() {
    let fds_before = fd_count();
    let cfg = EngineConfig {
        workers: 2,
        ..Default::default()
    };
    let (engine, _log, addr) = start(cfg, Behaviour::default());
    let h = engine.handle();
    let fds_running = fd_count();

    let clients: Vec<TcpStream> = (0..N)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}")))
        .collect();
    wait_until("10,000 connections open", DEADLINE, || {
        totals(&h).open == N as u64
    });
    let s = totals(&h);
    assert_eq!(s.accepted, N as u64);
    assert_eq!(s.slots_used, N as u64);
    // Accepted sockets are direct descriptors: only the client ends are in the fd table
    // (the peer-address lookups install one for a moment, so wait for those to finish).
    wait_until("only client sockets in the fd table", DEADLINE, || {
        fd_count() == fds_running + N
    });
    assert!(
        h.stats_all().iter().all(|s| s.open > 0),
        "both shards accept"
    );

    drop(clients);
    wait_until("every connection closed", DEADLINE, || {
        let s = totals(&h);
        s.open == 0 && s.slots_used == 0 && s.inflight_ops == 0
    });
    let s = totals(&h);
    assert_eq!(s.closed_total(), N as u64);
    assert_eq!(
        s.closed[ringport_io::CloseReason::PeerClosed.bucket()],
        N as u64
    );
    assert_eq!(fd_count(), fds_running);

    engine.shutdown();
    common::join_within(engine, DEADLINE);
    drop(h); // the handle owns the shards' doorbell eventfds
    assert_eq!(
        fd_count(),
        fds_before,
        "the engine released every descriptor"
    );
}
