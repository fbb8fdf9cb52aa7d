//! How connections end: peer reset, peer half-close, slow consumer.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{pattern, pump, start, totals, wait_until, Behaviour, Flow, DEADLINE};
use ringport_io::{CloseReason, EngineConfig};

fn one_worker() -> EngineConfig {
    EngineConfig {
        workers: 1,
        ..Default::default()
    }
}

#[test]
fn peer_reset_mid_stream_is_counted_as_peer_reset() {
    let (engine, log, addr) = start(
        one_worker(),
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
    let h = engine.handle();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).unwrap();
    // Mid-stream: more is in flight both ways when the reset goes out.
    c.write_all(&pattern(1, 512 * 1024)).unwrap_or(());
    let id = log.opens()[0];
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    wait_until("the reset connection closed", DEADLINE, || {
        log.close_reason(id).is_some()
    });
    assert_eq!(log.close_reason(id), Some(CloseReason::PeerReset));
    common::wait_at_rest(&h);
    assert_eq!(totals(&h).closed[CloseReason::PeerReset.bucket()], 1);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn peer_half_close_gets_every_echoed_byte_then_eof() {
    let (engine, log, addr) = start(
        one_worker(),
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
    let h = engine.handle();
    let data = pattern(2, 3 << 20);
    let mut c = TcpStream::connect(addr).unwrap();
    let mut w = c.try_clone().unwrap();
    let out = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&out).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("echo then EOF");
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echo differs");
    let id = log.opens()[0];
    wait_until("close reported", DEADLINE, || {
        log.close_reason(id).is_some()
    });
    assert_eq!(log.close_reason(id), Some(CloseReason::PeerClosed));
    drop(c);
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn peer_that_never_reads_is_closed_at_high_water_while_others_echo() {
    let cfg = EngineConfig {
        send_high_water: 1 << 20,
        ..one_worker()
    };
    let b = Behaviour {
        echo: true,
        flood: Some(64 * 1024),
        ..Default::default()
    };
    let (engine, log, addr) = start(cfg, b);
    let h = engine.handle();
    let received = AtomicU64::new(0);

    // Echo flows before, during and after the slow consumer. Each is smaller than the
    // high-water mark, so however far its writes run ahead of its reads (the engine may take
    // a whole batch of receives in one turn), it can never be a slow consumer itself.
    let mut flows: Vec<Flow> = (0..4)
        .map(|i| Flow::connect(addr, pattern(10 + i, 768 << 10)))
        .collect();
    let sink = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sink.set_recv_buffer_size(4096).unwrap();
    sink.connect(&addr.into()).unwrap();
    let mut sink = TcpStream::from(sink);
    sink.write_all(b"F").unwrap(); // never reads after this
    wait_until("both kinds of connection open", DEADLINE, || {
        log.opens().len() == 5
    });

    let deadline = Instant::now() + DEADLINE;
    pump(&mut flows[..2], deadline, &received, Flow::echoed);
    wait_until("the slow consumer closed", DEADLINE, || {
        log.closes_with(CloseReason::SlowConsumer) == 1
    });
    assert!(totals(&h).slow_consumers >= 1);
    pump(&mut flows[2..], deadline, &received, Flow::echoed);
    assert_eq!(
        log.closes.lock().unwrap().len(),
        1,
        "only the slow consumer closed"
    );
    // The sink sees the close: EOF or reset, after at most what was queued.
    sink.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match sink.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("slow consumer: {e}"),
        }
    }
    drop(flows);
    drop(sink);
    common::wait_at_rest(&h);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}
