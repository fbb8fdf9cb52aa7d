//! Backend selection: an explicit backend is used as configured and serves; `auto` picks
//! io_uring where the host allows it; the `RINGPORT_IO_BACKEND` variable sets the default.
//! (A host that blocks io_uring is simulated with seccomp in `tests/seccomp.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{start, Behaviour, DEADLINE};
use ringport_io::{EngineConfig, IoBackend};

fn echoes_on(backend: IoBackend) -> ringport_io::BackendChoice {
    let cfg = EngineConfig {
        workers: 1,
        io_backend: backend,
        ..Default::default()
    };
    let (engine, _log, addr) = common::start_echo(cfg);
    let choice = engine.handle().backend().clone();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let msg = common::pattern(7, 100_000);
    c.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert!(back == msg, "echoed byte for byte on {backend}");
    drop(c);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
    choice
}

#[test]
fn an_explicit_backend_is_used_as_configured() {
    for backend in [IoBackend::Epoll, IoBackend::Uring] {
        let choice = echoes_on(backend);
        assert_eq!(choice.backend, backend);
        assert_eq!(choice.reason, "configured");
    }
}

#[test]
fn auto_picks_io_uring_where_the_host_allows_it() {
    // This machine allows io_uring (the uring backend's tests run here).
    let choice = echoes_on(IoBackend::Auto);
    assert_eq!(choice.backend, IoBackend::Uring, "{}", choice.reason);
    assert!(choice.reason.starts_with("auto"), "{}", choice.reason);
}

#[test]
fn the_environment_variable_sets_the_default_backend() {
    let expected = match std::env::var(IoBackend::ENV).as_deref() {
        Ok("epoll") => IoBackend::Epoll,
        Ok("uring") => IoBackend::Uring,
        _ => IoBackend::Auto,
    };
    assert_eq!(EngineConfig::default().io_backend, expected);
    assert_eq!("epoll".parse::<IoBackend>(), Ok(IoBackend::Epoll));
    assert_eq!("uring".parse::<IoBackend>(), Ok(IoBackend::Uring));
    assert_eq!("auto".parse::<IoBackend>(), Ok(IoBackend::Auto));
    let err = "kqueue".parse::<IoBackend>().unwrap_err();
    assert!(err.contains("auto, uring or epoll"), "{err}");
}

/// Observed after the backend probe landed: tests that started an engine with `auto` saw
/// `EINTR` ("Interrupted system call") on their own blocking socket reads — the probe set up
/// a ring on the caller's thread, and that ring's teardown notified the thread. Starting an
/// engine must leave the caller's system calls alone.
#[test]
fn starting_an_engine_with_auto_does_not_interrupt_the_callers_system_calls() {
    let cfg = EngineConfig {
        workers: 1,
        io_backend: IoBackend::Auto,
        ..Default::default()
    };
    let (engine, _log, addr) = start(cfg, Behaviour::default());
    // Nothing is ever sent back: every read must end by its timeout, never by a signal.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    for _ in 0..20 {
        let mut b = [0u8; 8];
        let e = c.read(&mut b).expect_err("nothing arrives");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a blocking read on the thread that started the engine ended with {e}"
        );
    }
    drop(c);
    engine.shutdown();
    common::join_within(engine, DEADLINE);
}
