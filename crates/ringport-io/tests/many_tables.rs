//! More connections in one shard than one direct descriptor table holds: the kernel caps a
//! registered table at RLIMIT_NOFILE (20,000 on the test machine, not raisable), so a shard
//! adds tables (rings) as they fill (`max_descriptor_tables`). Both ends run on engines in
//! this process: on io_uring neither uses the process fd table, which is why 25,000
//! connections (50,000 sockets) fit in a process limited to 20,000 descriptors.
//! Its own test binary: it holds 50,000 sockets.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Instant;

use common::{nofile, start, totals, wait_until, Behaviour, Log, Recorder, DEADLINE};
use ringport_io::{ConnId, Engine, EngineConfig, IoBackend};
use std::sync::Arc;

/// Connections per source address (well inside the ephemeral port range).
const PER_SOURCE: usize = 10_000;

#[test]
fn one_shard_holds_more_connections_than_one_descriptor_table() {
    let n = (nofile() + 5_000).max(25_000);
    let cap = (n + 100) as u32;
    let server_cfg = EngineConfig {
        workers: 1,
        max_connections_per_shard: cap,
        resolve_peer_addr: false,
        ..Default::default()
    };
    let (server, _log, addr) = start(server_cfg, Behaviour::default());
    let sh = server.handle();
    if sh.backend().backend == IoBackend::Epoll {
        // On epoll sockets live in the process fd table: the cap follows RLIMIT_NOFILE
        // (docs/operations.md, "I/O backends"), and there are no descriptor tables.
        assert_eq!(totals(&sh).descriptor_tables, 0);
        server.shutdown();
        common::join_within(server, DEADLINE);
        return;
    }
    let log = Arc::new(Log::default());
    let l = log.clone();
    let client = Engine::start(
        EngineConfig {
            workers: 1,
            max_connections_per_shard: cap,
            ..Default::default()
        },
        move |_, _| Recorder::new(l.clone(), Behaviour::default()),
    )
    .expect("client engine");
    let ch = client.handle();

    // Connects in batches no larger than the listen backlog, each once the server caught up.
    // A batch is queued in one client turn and does not divide the table size: a batch finds
    // fewer free entries in the client's current table than it asks for, so the sockets it
    // creates must be counted against a table as they are issued, not as they complete (or
    // the rest of the batch fails with ENFILE).
    let mut ids: Vec<ConnId> = Vec::with_capacity(n);
    let started = Instant::now();
    while ids.len() < n {
        let from = ids.len();
        let batch = (n - from).min(3_000);
        let (tx, rx) = mpsc::channel();
        ch.run(0, move |_, ctx| {
            let out: Result<Vec<ConnId>, String> = (from..from + batch)
                .map(|i| {
                    let src: SocketAddr =
                        format!("127.0.1.{}:0", 1 + i / PER_SOURCE).parse().unwrap();
                    ctx.connect(addr, Some(src)).map_err(|e| e.to_string())
                })
                .collect();
            tx.send(out).unwrap();
        });
        ids.extend(rx.recv_timeout(DEADLINE).unwrap().expect("connects queued"));
        let want = ids.len() as u64;
        let deadline = Instant::now() + DEADLINE * 2;
        while totals(&sh).open != want {
            let failed: Vec<_> = log.closes.lock().unwrap().iter().take(5).copied().collect();
            assert!(
                failed.is_empty(),
                "client connections failed at {} of {n}: {failed:?}",
                ids.len()
            );
            let (s, c) = (totals(&sh), totals(&ch));
            assert!(
                Instant::now() < deadline,
                "the server accepted {} of {want}: server {s:?}, client {c:?}",
                s.open
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    eprintln!(
        "{n} connections in {:?} (RLIMIT_NOFILE {})",
        started.elapsed(),
        nofile()
    );
    wait_until("every client connection open", DEADLINE, || {
        totals(&ch).open == n as u64
    });
    let s = totals(&sh);
    assert_eq!(s.accepted, n as u64);
    assert_eq!(
        s.accept_errors, [0; 4],
        "no accept failed (no table overran)"
    );
    assert!(
        s.descriptor_tables >= 2,
        "{n} connections need more than one table of {}: {} tables",
        nofile(),
        s.descriptor_tables
    );
    assert!(totals(&ch).descriptor_tables >= 2, "the client side too");

    // Every connection works, whichever table holds it: one byte each way would do, one
    // from each client end is enough to prove receives on every table.
    let (tx, rx) = mpsc::channel();
    let all = ids.clone();
    ch.run(0, move |_, ctx| {
        for &id in &all {
            let _ = ctx.send_copy(id, b"x");
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(DEADLINE).unwrap();
    wait_until("a byte from every connection arrived", DEADLINE * 2, || {
        totals(&sh).bytes_in == n as u64
    });
    assert_eq!(totals(&sh).open, n as u64, "nothing closed meanwhile");

    client.shutdown();
    common::join_within(client, DEADLINE * 2);
    wait_until("the server saw every close", DEADLINE * 2, || {
        let s = totals(&sh);
        s.open == 0 && s.slots_used == 0
    });
    server.shutdown();
    common::join_within(server, DEADLINE);
}
