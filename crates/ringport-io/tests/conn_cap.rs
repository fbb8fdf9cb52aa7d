//! A shard at its connection cap keeps serving, leaves the excess in the listen backlog, does
//! not spin, and serves the waiting clients as slots free up.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{start, totals, wait_until, Behaviour, DEADLINE};
use ringport_io::EngineConfig;

/// An engine whose handler echoes what it receives.
fn start_echo(
    cfg: EngineConfig,
) -> (
    ringport_io::Engine<common::Recorder>,
    std::sync::Arc<common::Log>,
    std::net::SocketAddr,
) {
    start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    )
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes into the local timespec we pass.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whether `c` gets its "ping" echoed within `wait` (false: nothing yet, still connected).
fn served(c: &mut TcpStream, wait: Duration) -> bool {
    c.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4];
    match c.read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(&buf, b"ping");
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("a waiting client was dropped instead of left in the backlog: {e}"),
    }
}

#[test]
fn full_table_leaves_the_rest_in_the_backlog_without_spinning() {
    let cfg = EngineConfig {
        workers: 1,
        max_connections_per_shard: 8,
        ..Default::default()
    };
    let (engine, _log, addr) = start_echo(cfg);
    let h = engine.handle();
    let mut clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &mut clients {
        c.write_all(b"ping").unwrap();
    }
    for (i, c) in clients[..8].iter_mut().enumerate() {
        assert!(served(c, DEADLINE), "client {i} within the cap is served");
    }
    assert_eq!(totals(&h).open, 8);

    // Saturated: measure the shard thread's CPU over about a second.
    let (tx, rx) = mpsc::channel();
    let cpu_at = |tx: mpsc::Sender<(Instant, Duration)>| {
        move |_: &mut common::Recorder, _: &mut ringport_io::Ctx<'_, common::Recorder>| {
            let _ = tx.send((Instant::now(), thread_cpu()));
        }
    };
    h.run(0, cpu_at(tx.clone()));
    let (t0, cpu0) = rx.recv_timeout(DEADLINE).unwrap();
    // Meanwhile the waiting clients stay waiting (and connected).
    for c in &mut clients[8..] {
        assert!(!served(c, Duration::from_millis(50)));
    }
    let wait = Duration::from_secs(1).saturating_sub(t0.elapsed());
    std::thread::sleep(wait);
    h.run(0, cpu_at(tx));
    let (t1, cpu1) = rx.recv_timeout(DEADLINE).unwrap();
    let (wall, cpu) = (t1 - t0, cpu1 - cpu0);
    assert!(
        cpu.as_secs_f64() < 0.2 * wall.as_secs_f64(),
        "the shard must not spin at its cap: {cpu:?} CPU in {wall:?}"
    );
    assert_eq!(totals(&h).open, 8);

    // Free three slots: the next three waiting clients are served, in backlog order.
    drop(clients.drain(..3));
    for (i, c) in clients[5..8].iter_mut().enumerate() {
        assert!(
            served(c, DEADLINE),
            "waiting client {} served after slots freed",
            8 + i
        );
    }
    wait_until("back at the cap", DEADLINE, || totals(&h).open == 8);
    for c in &mut clients[8..] {
        assert!(!served(c, Duration::from_millis(20)));
    }
    assert_eq!(totals(&h).accepted, 11);
    // The rest were waiting, not dropped: closing everyone lets them all in (and out).
    drop(clients);
    wait_until("every client accepted", DEADLINE, || {
        totals(&h).accepted == 20
    });
    common::wait_at_rest(&h);
    assert_eq!(totals(&h).accept_errors, [0; 4], "no accept failed");
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

/// An outbound connection that takes the last free slot pauses accepting too: the next
/// client waits in the backlog instead of being accepted into a full table and dropped.
#[test]
fn outbound_connect_taking_the_last_slot_pauses_accepting() {
    let cfg = EngineConfig {
        workers: 1,
        max_connections_per_shard: 2,
        ..Default::default()
    };
    let (engine, log, addr) = start_echo(cfg);
    let h = engine.handle();
    let mut a = TcpStream::connect(addr).unwrap();
    a.write_all(b"ping").unwrap();
    assert!(served(&mut a, DEADLINE));

    let remote = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = remote.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    h.run(0, move |_, ctx| {
        tx.send(ctx.connect(to, None).unwrap()).unwrap()
    });
    let out = rx.recv_timeout(DEADLINE).unwrap();
    let (_peer, _) = remote.accept().unwrap();
    wait_until("outbound open", DEADLINE, || totals(&h).open == 2);

    let mut b = TcpStream::connect(addr).unwrap();
    b.write_all(b"ping").unwrap();
    assert!(
        !served(&mut b, Duration::from_millis(300)),
        "no slot for b yet"
    );
    h.close(out, ringport_io::CloseReason::Local);
    assert!(
        served(&mut b, DEADLINE),
        "b is served once the outbound connection is gone"
    );
    assert!(log.opens().len() == 3);
    assert_eq!(totals(&h).accept_errors, [0; 4]);
    drop((a, b, _peer));
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

/// With `over_cap_reply` the cap is process-wide (`max_connections_per_shard × workers`):
/// connections up to it are served whichever shard the kernel's hash picks, and each one
/// over it gets the reply and end of stream at once, without the handler ever seeing it.
#[test]
fn over_cap_reply_refuses_the_excess_process_wide() {
    let cfg = EngineConfig {
        workers: 2,
        max_connections_per_shard: 2,
        over_cap_reply: Some(bytes::Bytes::from_static(b"full")),
        ..Default::default()
    };
    let (engine, log, addr) = start_echo(cfg);
    let h = engine.handle();
    // Eight connections from distinct source ports: an even 4/4 split over the shards
    // is unlikely, so a per-shard cap of 2 would leave some unanswered.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"ping").unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        got.extend_from_slice(&buf);
        if &got[..] == b"ping" {
            held.push(c);
        } else {
            assert_eq!(&got[..], b"full");
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "end of stream after the reply");
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (4, 4));
    assert_eq!(h.open_connections(), 4);
    assert_eq!(totals(&h).refused_over_cap, 4);
    assert_eq!(
        log.opens().len(),
        4,
        "the handler never saw a refused connection"
    );
    // A freed place is taken by the next client, whichever shard it lands on.
    drop(held.pop());
    wait_until("a place freed", DEADLINE, || h.open_connections() == 3);
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"ping").unwrap();
    assert!(served(&mut c, DEADLINE));
    drop((held, c));
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}
