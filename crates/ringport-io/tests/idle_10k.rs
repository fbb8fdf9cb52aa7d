//! Ten thousand idle connections: opened, held, closed, with no slot or descriptor leak.
//! Its own test binary: it counts the process's descriptors.

mod common;

use std::net::TcpStream;

use common::{fd_count, nofile, start, totals, wait_until, Behaviour, DEADLINE};
use ringport_io::{EngineConfig, IoBackend};

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
    // On io_uring accepted sockets are direct descriptors, outside the fd table; on epoll
    // both ends of every connection are in this process's table, so as many connections as
    // half of RLIMIT_NOFILE (less room for the rest of the process) fit.
    let epoll = h.backend().backend == IoBackend::Epoll;
    let n = if epoll {
        N.min((nofile() - fds_running - 200) / 2)
    } else {
        N
    };
    let server_fds = if epoll { n } else { 0 };

    let clients: Vec<TcpStream> = (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}")))
        .collect();
    wait_until("every connection open", DEADLINE, || {
        totals(&h).open == n as u64
    });
    let s = totals(&h);
    assert_eq!(s.accepted, n as u64);
    assert_eq!(s.slots_used, n as u64);
    // io_uring: only the client ends are in the fd table (the peer-address lookups install
    // one for a moment, so wait for those to finish); epoll: the server ends too.
    wait_until(
        "only the connections' sockets in the fd table",
        DEADLINE,
        || fd_count() == fds_running + n + server_fds,
    );
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
    assert_eq!(s.closed_total(), n as u64);
    assert_eq!(
        s.closed[ringport_io::CloseReason::PeerClosed.bucket()],
        n as u64
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
