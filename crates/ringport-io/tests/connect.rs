//! Outbound connections: `Ctx::connect` from a chosen source address, and a refused one.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use common::{wait_until, Behaviour, Log, Recorder, DEADLINE};
use ringport_io::{CloseReason, ConnId, Engine, EngineConfig, Origin};
use std::sync::Arc;

fn client_engine() -> (Engine<Recorder>, Arc<Log>) {
    client_engine_with(EngineConfig {
        workers: 1,
        ..Default::default()
    })
}

fn client_engine_with(cfg: EngineConfig) -> (Engine<Recorder>, Arc<Log>) {
    let log = Arc::new(Log::default());
    let l = log.clone();
    let b = Behaviour {
        keep: true,
        ..Default::default()
    };
    let engine = Engine::start(cfg, move |_, _| Recorder::new(l.clone(), b)).expect("engine");
    (engine, log)
}

fn connect(engine: &Engine<Recorder>, to: SocketAddr, bind: Option<SocketAddr>) -> ConnId {
    let (tx, rx) = mpsc::channel();
    engine.handle().run(0, move |_, ctx| {
        tx.send(ctx.connect(to, bind).map_err(|e| e.to_string()))
            .unwrap();
    });
    rx.recv_timeout(DEADLINE).unwrap().expect("connect queued")
}

#[test]
fn outbound_connect_from_a_source_address_carries_data_both_ways() {
    let (engine, log) = client_engine();
    let h = engine.handle();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind: SocketAddr = "127.0.0.7:0".parse().unwrap();
    let id = connect(&engine, listener.local_addr().unwrap(), Some(bind));
    let (mut peer, from) = listener.accept().unwrap();
    assert_eq!(
        from.ip(),
        bind.ip(),
        "the connection comes from the requested source"
    );
    wait_until("on_open(Connected)", DEADLINE, || !log.opens().is_empty());
    assert_eq!(log.opens.lock().unwrap()[0], (id, Origin::Connected));
    assert_eq!(h.stats(0).connected, 1);

    // Engine -> peer.
    let msg = common::pattern(7, 300_000);
    h.send(id, bytes::Bytes::from(msg.clone()));
    let mut got = vec![0u8; msg.len()];
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    peer.read_exact(&mut got).unwrap();
    assert!(got == msg);
    // Peer -> engine.
    peer.write_all(b"from the other side").unwrap();
    wait_until("bytes arrive at the engine", DEADLINE, || {
        log.received.lock().unwrap().get(&id).map(|v| v.len()) == Some(19)
    });
    assert_eq!(log.received.lock().unwrap()[&id], b"from the other side");

    drop(peer);
    wait_until("peer close seen", DEADLINE, || {
        log.close_reason(id).is_some()
    });
    assert_eq!(log.close_reason(id), Some(CloseReason::PeerClosed));
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn connect_to_a_closed_port_fails_with_econnrefused() {
    let (engine, log) = client_engine();
    let h = engine.handle();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = connect(&engine, closed, Some("127.0.0.9:0".parse().unwrap()));
    wait_until("on_close", DEADLINE, || log.close_reason(id).is_some());
    assert_eq!(
        log.close_reason(id),
        Some(CloseReason::ConnectFailed(libc::ECONNREFUSED))
    );
    assert!(log.opens().is_empty(), "no on_open for a failed connect");
    common::wait_at_rest(&h);
    // The slot is reusable: a second attempt fails the same way.
    let id2 = connect(&engine, closed, None);
    assert_ne!(id, id2);
    wait_until("second on_close", DEADLINE, || {
        log.close_reason(id2).is_some()
    });
    assert_eq!(log.closes.lock().unwrap().len(), 2);
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

/// With a tiny submission queue, the linked socket setup → bind → connect chain must still
/// reach the kernel whole: split across two submits, the connect can run before the bind and
/// leave from the wrong address (and the bind then fails). Many connects are queued in one
/// loop turn so the queue fills mid-chain again and again.
#[test]
fn connects_with_a_tiny_ring_each_leave_from_the_address_they_asked_for() {
    const N: usize = 300;
    let (engine, log) = client_engine_with(EngineConfig {
        workers: 1,
        ring_entries: 8,
        ..Default::default()
    });
    let h = engine.handle();
    // A backlog for every connection at once (std's 128 would drop some handshakes).
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(1024).unwrap();
    let listener = TcpListener::from(listener);
    let to = listener.local_addr().unwrap();
    // Asked-for source address of every connection, by its id.
    let (tx, rx) = mpsc::channel();
    for batch in 0..N / 50 {
        let tx = tx.clone();
        engine.handle().run(0, move |_, ctx| {
            for i in batch * 50..(batch + 1) * 50 {
                let ip = std::net::Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200) as u8 + 2);
                let bind = SocketAddr::from((ip, 0));
                tx.send((ctx.connect(to, Some(bind)).expect("connect queued"), ip))
                    .unwrap();
            }
        });
    }
    let asked: std::collections::HashMap<std::net::IpAddr, ConnId> = (0..N)
        .map(|_| {
            let (id, ip) = rx.recv_timeout(DEADLINE).unwrap();
            (std::net::IpAddr::V4(ip), id)
        })
        .collect();
    assert_eq!(asked.len(), N, "distinct source addresses");
    listener.set_nonblocking(true).unwrap();
    let mut from = Vec::new();
    wait_until("every connection accepted", DEADLINE, || {
        while let Ok((s, peer)) = listener.accept() {
            from.push((s, peer.ip()));
        }
        from.len() >= N || log.closes.lock().unwrap().len() + from.len() >= N
    });
    let closes = log.closes.lock().unwrap().clone();
    assert!(closes.is_empty(), "no connect failed: {closes:?}");
    let mut wrong = Vec::new();
    for (_, ip) in &from {
        if !asked.contains_key(ip) {
            wrong.push(*ip);
        }
    }
    assert!(
        wrong.is_empty(),
        "connections from addresses nobody asked for: {wrong:?}"
    );
    assert_eq!(from.len(), N);
    wait_until("every connection open", DEADLINE, || log.opens().len() == N);
    drop(from);
    wait_until("every connection closed", DEADLINE, || {
        log.closes.lock().unwrap().len() == N
    });
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}
