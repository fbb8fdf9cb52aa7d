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
    let (engine, _log, addr) = start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    );
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
