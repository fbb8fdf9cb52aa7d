//! A shard whose receives have gone quiet gives its receive buffers' memory back to the
//! kernel (`EngineConfig::recv_buffer_trim`), and echoes on afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{totals, wait_until, Recorder, DEADLINE};
use ringport_io::{Engine, EngineConfig, IoBackend};

const BUFS: u16 = 16;
const BUF_SIZE: u32 = 4096;

/// Sends `n` small messages one at a time, each echoed before the next, so each takes a
/// receive buffer of its own.
fn echo_messages(client: &mut TcpStream, from: usize, n: usize) {
    for i in from..from + n {
        let msg = format!("message {i:04}");
        client.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

/// An echo engine with one io_uring shard of `BUFS` receive buffers trimmed after `trim`,
/// and a client of it.
fn echo_engine(trim: Option<Duration>) -> (Engine<Recorder>, TcpStream) {
    let cfg = EngineConfig {
        workers: 1,
        io_backend: IoBackend::Uring,
        recv_buffers: BUFS,
        recv_buffer_size: BUF_SIZE,
        recv_buffer_trim: trim,
        ..Default::default()
    };
    let (engine, _log, addr) = common::start_echo(cfg);
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    (engine, client)
}

/// Closes `client` and stops `engine` once every connection is gone.
fn stop(engine: Engine<Recorder>, client: TcpStream) {
    drop(client);
    common::wait_at_rest(&engine.handle());
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}

#[test]
fn a_quiet_shard_trims_its_receive_buffers() {
    let (engine, mut client) = echo_engine(Some(Duration::from_millis(100)));
    let h = engine.handle();
    // Twice round the ring: every buffer has been written.
    echo_messages(&mut client, 0, 2 * usize::from(BUFS));
    let ring = u64::from(BUFS) * u64::from(BUF_SIZE);
    // Quiet from here: the shard trims within its 100 ms (a generous deadline for a loaded
    // machine) and gives back every page the receives made resident. Each page was written,
    // so each is counted at least once, also if a stall of the client let a trim run
    // between two messages (then some are counted twice).
    wait_until("the receive buffers trimmed", DEADLINE, || {
        totals(&h).recv_buffer_trimmed_bytes >= ring
    });
    let first = totals(&h).recv_buffer_trimmed_bytes;
    // Receives go on (into fresh zero-filled pages) with their bytes intact, and the next
    // quiet spell gives back every page they wrote.
    echo_messages(&mut client, 1000, 2 * usize::from(BUFS));
    wait_until("the receive buffers trimmed again", DEADLINE, || {
        totals(&h).recv_buffer_trimmed_bytes >= first + ring
    });
    stop(engine, client);
}

#[test]
fn no_trim_when_switched_off() {
    let (engine, mut client) = echo_engine(None);
    let h = engine.handle();
    echo_messages(&mut client, 0, 2 * usize::from(BUFS));
    // Long past the default trim interval (1 s): nothing trimmed.
    std::thread::sleep(Duration::from_millis(1500));
    echo_messages(&mut client, 100, 1);
    assert_eq!(totals(&h).recv_buffer_trimmed_bytes, 0);
    stop(engine, client);
}
