//! A NATS broker and gateway nodes for the cluster tests: in-process nodes
//! ([`TestServer`]) and `ringport serve` processes ([`NodeProcess`], for SIGTERM and
//! SIGKILL), with the helpers both use.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringport::config::Config;
use ringport_proto::{Frame, Status, StreamName};

use super::gateway::{test_config, token, Client, TestServer, SECRET, WAIT};
use super::Response;

/// Sends `sig` (`-STOP`, `-TERM`, ...) to `child`.
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig}");
}

/// What the helpers need of a node, in process or not.
pub trait Node {
    fn client(&self) -> Client;
    fn http(&self, method: &str, path: &str, body: &str) -> Response;
    fn wait_metric(&self, line: &str) -> String;
    fn welcomed(&self, token: &str) -> Client {
        let mut c = self.client();
        match c.hello(token) {
            Frame::Welcome(_) => c,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
}

impl Node for TestServer {
    fn client(&self) -> Client {
        TestServer::client(self)
    }
    fn http(&self, method: &str, path: &str, body: &str) -> Response {
        TestServer::http(self, method, path, body)
    }
    fn wait_metric(&self, line: &str) -> String {
        TestServer::wait_metric(self, line)
    }
}

/// A nats-server child process, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    fn bin() -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
            .expect("nats-server is installed (apt-get install -y nats-server)")
    }

    /// Starts a broker on `port` (a free one when `None`) and waits until it listens.
    pub fn start(port: Option<u16>) -> Broker {
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = Command::new(Self::bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway node of the cluster on `broker`, its config changed by `tweak`.
pub fn node_with(broker: &Broker, id: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut c = test_config();
    c.auth.secret = Some(SECRET.into());
    c.cluster.servers = Some(broker.url());
    c.cluster.node_id = Some(id.into());
    c.cluster.ping_interval_ms = 200;
    c.cluster.reconnect_max_delay_ms = 200;
    c.cluster.connect_timeout_ms = 500;
    tweak(&mut c);
    TestServer::start(c)
}

/// A gateway node of the cluster on `broker`.
pub fn node(broker: &Broker, id: &str) -> TestServer {
    node_with(broker, id, |_| {})
}

pub fn scrape(n: &impl Node) -> String {
    n.http("GET", "/metrics", "").body
}

/// A client of `user` on `n` that joined `room`.
pub fn member(n: &impl Node, user: &str, room: &str) -> Client {
    let mut c = n.welcomed(&token(user, &[room]));
    assert_eq!(c.join(1, room), Status::OK);
    c
}

/// Pushes `payload` through `n`'s HTTP API to `path`; returns the answer body.
pub fn push(n: &impl Node, path: &str, payload: &str) -> String {
    let r = n.http("POST", path, &format!("{{\"payload\":\"{payload}\"}}"));
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

/// The payloads of the next `n` PUSH frames (PINGs answered), checking offsets increase.
pub fn pushes(c: &mut Client, n: usize) -> Vec<String> {
    let mut last: Option<(StreamName, u64)> = None;
    (0..n)
        .map(|_| {
            let p = c.push();
            if let Some((s, o)) = &last {
                if *s == p.stream {
                    assert!(p.offset > *o, "offsets increase: {o} then {}", p.offset);
                }
            }
            last = Some((p.stream.clone(), p.offset));
            String::from_utf8(p.payload.to_vec()).unwrap()
        })
        .collect()
}

/// Nothing more arrives on `c` (its PONG comes first).
pub fn nothing_more(c: &mut Client) {
    let extra = c.until_pong(99);
    assert!(extra.is_empty(), "unexpected frames: {extra:?}");
}

/// A `ringport serve` process of the cluster on a broker (SIGTERM and SIGKILL are real).
/// Its log (JSON lines on stderr) is kept for [`NodeProcess::wait_log`]. Killed on drop.
pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts node `id` on `broker` with `extra` arguments; returns once it is ready.
    pub fn start(broker: &Broker, id: &str, extra: &[&str]) -> NodeProcess {
        let url = broker.url();
        let secret = format!("auth.secret={SECRET}");
        let mut args = super::serve_args("127.0.0.1:0");
        args.extend([
            "--cluster",
            &url,
            "--node-id",
            id,
            "--set",
            &secret,
            "--set",
            "engine.shutdown_timeout_ms=1000",
            "--set",
            "cluster.ping_interval_ms=200",
            "--set",
            "cluster.reconnect_max_delay_ms=200",
            "--set",
            "cluster.connect_timeout_ms=500",
        ]);
        args.extend(extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
        cmd.args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.envs(std::env::var("RINGPORT_IO_BACKEND").map(|v| ("RINGPORT_IO_BACKEND", v)));
        let mut child = cmd.spawn().expect("ringport starts");
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&log);
        // Reads the log to its end (else the node's writes to stderr would block).
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "ringport ready" {
                    let addr = |k: &str| v[k].as_str().unwrap_or_default().parse().ok();
                    let _ = tx.send(addr("clients").zip(addr("admin")));
                }
                kept.lock().unwrap().push(line);
            }
        });
        let (addr, admin_addr) = rx
            .recv_timeout(WAIT)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("node {id} not ready: {:?}", child.try_wait()));
        NodeProcess {
            child,
            addr,
            admin_addr,
            log,
        }
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Sends SIGSTOP and waits until every thread of the process is stopped (the signal
    /// reaches a running thread a little later than `kill` returns).
    pub fn stop(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        let deadline = Instant::now() + WAIT;
        loop {
            let stopped = std::fs::read_dir(&tasks)
                .expect("/proc task list")
                .all(|t| {
                    let stat =
                        std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
                    // The state follows the command name, which is in parentheses.
                    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
                    matches!(state, Some("T") | Some("t") | None)
                });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the node did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (at most [`WAIT`]) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the node's log until a line contains every one of `words`; that line.
    pub fn wait_log(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line with {words:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A broker and nodes a, b and c that see each other, each subscribed to every stream.
pub fn three_nodes(extra: &[&str]) -> (Broker, [NodeProcess; 3]) {
    let broker = Broker::start(None);
    let nodes = ["a", "b", "c"].map(|id| NodeProcess::start(&broker, id, extra));
    for n in &nodes {
        n.wait_metric("ringport_cluster_nodes 3");
        // Every node replicates every stream (the default): rooms, users, broadcasts.
        n.wait_metric("ringport_cluster_subscriptions 3");
    }
    (broker, nodes)
}

impl Node for NodeProcess {
    fn client(&self) -> Client {
        Client::connect(self.addr)
    }
    fn http(&self, method: &str, path: &str, body: &str) -> Response {
        super::request(self.admin_addr, method, path, &[], body)
    }
    fn wait_metric(&self, line: &str) -> String {
        super::gateway::wait_metric_at(self.admin_addr, line)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
