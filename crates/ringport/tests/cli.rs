//! The `ringport` binary end to end (hermetic environment).

use std::process::{Command, Output};
use std::time::SystemTime;

use ringport::config::Config;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn ringport(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringport-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_default_round_trips_and_checks() {
    let o = ringport(&["config", "default"], &[]);
    assert!(o.status.success());
    let text = stdout(&o);
    let parsed: Config = toml::from_str(&text).unwrap();
    assert_eq!(parsed, Config::default());
    let path = temp_file("default.toml", &text);
    let o = ringport(&["config", "check", path.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with(": ok\n"));
}

#[test]
fn config_check_names_the_key() {
    let path = temp_file("bad.toml", "[engine]\nrecv_buffers = 100\n");
    let o = ringport(&["config", "check", path.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("engine.recv_buffers must be a power of two between 1 and 32768"),
        "{}",
        stderr(&o)
    );
    // The environment is applied too, as `serve` would see it.
    let path = temp_file("ok.toml", "");
    let o = ringport(
        &["config", "check", path.to_str().unwrap()],
        &[("RINGPORT_SERVER__WORKERS", "999")],
    );
    assert!(stderr(&o).contains("server.workers"), "{}", stderr(&o));
}

#[test]
fn token_needs_a_secret() {
    let o = ringport(&["token", "--user", "u", "--rooms", "a"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("RINGPORT_AUTH_SECRET") && err.contains("--secret"),
        "{err}"
    );
}

#[test]
fn token_verifies() {
    for (args, env) in [
        (vec!["--secret", SECRET], vec![]),
        (vec![], vec![("RINGPORT_AUTH_SECRET", SECRET)]),
    ] {
        let mut all = vec![
            "token",
            "--user",
            "alice",
            "--rooms",
            "lobby,chat.*",
            "--ttl",
            "1h",
        ];
        all.extend(args);
        let o = ringport(&all, &env);
        assert!(o.status.success(), "{}", stderr(&o));
        let token = stdout(&o).trim().to_owned();
        let claims = ringport::auth::verify(&token, SECRET.as_bytes(), SystemTime::now()).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(claims.may_join("chat.room1"));
        assert!(!claims.may_join("other"));
    }
}

#[test]
fn serve_announces_then_reports_a_busy_port() {
    // A plain listener (no SO_REUSEPORT) makes the engine's bind fail.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let o = ringport(
        &[
            "serve",
            "--listen",
            &listen,
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("data plane"), "{err}");
    assert!(err.contains("\"message\":\"ringport starting\""), "{err}");
    assert!(err.contains("ANONYMOUS ACCESS IS ALLOWED"), "{err}");
    let o = ringport(&["serve", "--admin", "0.0.0.0:4667"], &[]);
    assert!(
        stderr(&o).contains("admin.api_key is required"),
        "{}",
        stderr(&o)
    );
}
