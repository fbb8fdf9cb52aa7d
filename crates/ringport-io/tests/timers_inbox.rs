//! Timers, idle timeouts, and reaching a shard from other threads through its inbox.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{start, totals, wait_until, Behaviour, DEADLINE};
use ringport_io::{CloseReason, ConnId, EngineConfig};

fn one_worker() -> EngineConfig {
    EngineConfig {
        workers: 1,
        ..Default::default()
    }
}

fn read_exactly(c: &mut TcpStream, n: usize) -> Vec<u8> {
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut v = vec![0u8; n];
    c.read_exact(&mut v).unwrap();
    v
}

fn read_eof(c: &mut TcpStream) {
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut b = [0u8; 64];
    assert_eq!(c.read(&mut b).expect("EOF, not an error"), 0, "EOF");
}

/// Connects and returns the engine's id for the new connection.
fn open(addr: std::net::SocketAddr, log: &common::Log) -> (TcpStream, ConnId) {
    let before = log.opens().len();
    let c = TcpStream::connect(addr).unwrap();
    wait_until("on_open", DEADLINE, || log.opens().len() == before + 1);
    (c, log.opens()[before])
}

#[test]
fn set_timer_fires_once_not_before_its_deadline() {
    let (engine, log, addr) = start(one_worker(), Behaviour::default());
    let h = engine.handle();
    let (_c, id) = open(addr, &log);
    let (tx, rx) = mpsc::channel();
    h.run(0, move |_, ctx| {
        // Set far, then earlier, then later again: the last setting wins.
        let now = Instant::now();
        ctx.set_timer(id, now + Duration::from_secs(30));
        ctx.set_timer(id, now + Duration::from_millis(20));
        let at = now + Duration::from_millis(250);
        ctx.set_timer(id, at);
        tx.send(at).unwrap();
    });
    let at = rx.recv_timeout(DEADLINE).unwrap();
    wait_until("on_timer", DEADLINE, || {
        !log.timers.lock().unwrap().is_empty()
    });
    let (tid, turn, wall) = log.timers.lock().unwrap()[0];
    assert_eq!(tid, id);
    assert!(
        turn >= at && wall >= at,
        "fired {:?} early",
        at - turn.min(wall)
    );
    // Once: nothing more within a few more ticks (a negative check needs some waiting).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.timers.lock().unwrap().len(), 1, "fires once");

    // A cancelled timer does not fire.
    let (tx, rx) = mpsc::channel();
    h.run(0, move |_, ctx| {
        ctx.set_timer(id, Instant::now() + Duration::from_millis(50));
        ctx.cancel_timer(id);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(DEADLINE).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        log.timers.lock().unwrap().len(),
        1,
        "cancelled timer stayed quiet"
    );
    drop(_c); // else the shutdown lingers for the peer's FIN
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn idle_timeout_closes_the_idle_connection_only() {
    let idle = Duration::from_secs(1);
    let cfg = EngineConfig {
        idle_timeout: Some(idle),
        ..one_worker()
    };
    let (engine, log, addr) = start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    let (mut quiet, quiet_id) = open(addr, &log);
    let (mut busy, busy_id) = open(addr, &log);
    // The busy one talks every 50 ms for three idle periods.
    let mut echoed = 0;
    while t0.elapsed() < 3 * idle {
        busy.write_all(b"x").unwrap();
        echoed += read_exactly(&mut busy, 1).len();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(echoed > 10);
    wait_until("idle close", DEADLINE, || {
        log.close_reason(quiet_id).is_some()
    });
    assert_eq!(log.close_reason(quiet_id), Some(CloseReason::IdleTimeout));
    assert_eq!(
        log.close_reason(busy_id),
        None,
        "an active connection stays open"
    );
    read_eof(&mut quiet);
    let closed_after = t0.elapsed();
    assert!(closed_after >= idle, "closed after {closed_after:?}");
    drop(busy);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn inbox_send_send_many_close_run_and_stale_ids() {
    let (engine, log, addr) = start(one_worker(), Behaviour::default());
    let h = engine.handle();
    let (mut c1, id1) = open(addr, &log);
    let (mut c2, id2) = open(addr, &log);

    h.send(id1, Bytes::from_static(b"one"));
    assert_eq!(read_exactly(&mut c1, 3), b"one");
    h.send_many(0, vec![id1, id2], Bytes::from_static(b"both"));
    assert_eq!(read_exactly(&mut c1, 4), b"both");
    assert_eq!(read_exactly(&mut c2, 4), b"both");

    let (tx, rx) = mpsc::channel();
    h.run(0, move |_, ctx| {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send((name, ctx.is_open(id1), ctx.shard())).unwrap();
    });
    let (name, open1, shard) = rx.recv_timeout(DEADLINE).unwrap();
    assert!(name.unwrap_or_default().starts_with("ringport-shard-"));
    assert!(open1);
    assert_eq!(shard, 0);

    h.close(id1, CloseReason::App(7));
    read_eof(&mut c1);
    assert_eq!(log.close_reason(id1), Some(CloseReason::App(7)));
    drop(c1);
    wait_until("id1's slot freed", DEADLINE, || totals(&h).slots_used == 1);

    // The freed slot is reused with a new generation; the stale id must not reach it.
    let (mut c3, id3) = open(addr, &log);
    assert_eq!(id3.index(), id1.index(), "slot reused");
    assert_ne!(id3, id1);
    h.send(id1, Bytes::from_static(b"stale"));
    h.close(id1, CloseReason::Local);
    h.send(id3, Bytes::from_static(b"fresh"));
    assert_eq!(read_exactly(&mut c3, 5), b"fresh");
    assert_eq!(log.close_reason(id3), None);
    c3.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 8];
    let e = c3.read(&mut b).expect_err("nothing more for c3");
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(totals(&h).open, 2);
    drop((c2, c3));
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

/// The idle deadline counts from the last receive, not from the start of its timer tick: with
/// a coarse tick, a connection must still get its full idle time.
#[test]
fn idle_timeout_is_never_early_even_with_a_coarse_tick() {
    let idle = Duration::from_millis(600);
    let cfg = EngineConfig {
        idle_timeout: Some(idle),
        timer_tick: Duration::from_millis(200),
        ..one_worker()
    };
    let (engine, log, addr) = start(cfg, Behaviour::default());
    // A chatty connection keeps the loop turning every few ms, so timers are checked right
    // at tick boundaries (a quiet loop wakes late and would hide an early deadline).
    let (mut chatty, _) = open(addr, &log);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let chatter = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            chatty.write_all(b".").unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let conns: Vec<_> = (0..5)
        .map(|_| {
            let c = open(addr, &log);
            std::thread::sleep(Duration::from_millis(37)); // spread over the tick
            c
        })
        .collect();
    for (_, id) in &conns {
        wait_until("idle close", DEADLINE, || log.close_reason(*id).is_some());
        assert_eq!(log.close_reason(*id), Some(CloseReason::IdleTimeout));
        let lived = log.closed_at.lock().unwrap()[id] - log.opened_at.lock().unwrap()[id];
        assert!(
            lived >= idle,
            "closed after {lived:?} idle, before {idle:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    chatter.join().unwrap();
    drop(conns);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

/// Posts made inside a `DoorbellBatch` wake a sleeping shard once, when the batch ends, and
/// the shard takes them all in that one turn (a burst of pushes leaves together).
#[test]
fn a_doorbell_batch_wakes_a_sleeping_shard_once_for_many_posts() {
    let (engine, _log, _addr) = start(one_worker(), Behaviour::default());
    let h = engine.handle();
    // Idle: no connection, no timer, so the shard sleeps until its doorbell rings.
    let (tx, rx) = mpsc::channel();
    let ran = |tx: &mpsc::Sender<u64>| {
        let tx = tx.clone();
        move |_: &mut common::Recorder, _: &mut ringport_io::Ctx<'_, common::Recorder>| {
            tx.send(0).unwrap();
        }
    };
    h.run(0, ran(&tx));
    rx.recv_timeout(DEADLINE)
        .expect("the shard runs a plain post");
    let loops_before = totals(&h).loops;
    {
        let _batch = ringport_io::DoorbellBatch::begin();
        for _ in 0..100 {
            h.run(0, ran(&tx));
        }
        // Nothing rang: the sleeping shard has not seen the posts yet. (On epoll its wait
        // once returned early here, with the other tests of this binary running: the
        // doorbell eventfd was registered for writability too, and the read of the previous
        // ring woke the next wait; `reading_the_doorbell_does_not_wake_the_next_wait` in
        // sys/epoll/driver.rs.)
        assert!(
            rx.recv_timeout(Duration::from_millis(150)).is_err(),
            "the shard ran a post before the batch rang its doorbell"
        );
    }
    for i in 0..100 {
        rx.recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("post {i} not run after the batch ended"));
    }
    let turns = totals(&h).loops - loops_before;
    assert!(turns <= 3, "100 batched posts took {turns} loop turns");
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}
