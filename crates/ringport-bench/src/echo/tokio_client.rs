//! The echo load on tokio: one task per connection driving an [`EchoConn`].
//!
//! A cross-check, not the main client: it uses ordinary file descriptors (so at most ~20,000
//! connections per process here) and tokio's scheduling. Use it to confirm that the ringport-io
//! client is not what limits a result, or before the engine is available.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};

use super::conn::pattern;
use super::EchoConfig;
use crate::measure::{LoadDriver, SharedStats, FLUSH_EVERY};
use crate::stats::record_latency;

/// How often (in polled tasks) a worker takes a task from the global queue. With thousands of
/// ready connection tasks on one worker, the default lets tasks that overflowed into the global
/// queue wait hundreds of milliseconds, which shows up as a latency tail of the *client*.
const GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// Connects in flight at once (keeps the server's accept backlog from overflowing).
const CONNECT_WINDOW: usize = 256;

pub struct TokioEcho {
    cfg: EchoConfig,
    shared: Vec<Arc<SharedStats>>,
    runtime: tokio::runtime::Runtime,
    start: watch::Sender<Option<Instant>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TokioEcho {
    pub fn new(cfg: EchoConfig) -> anyhow::Result<TokioEcho> {
        let threads = cfg.threads.max(1);
        // Multi-thread even for one thread: its workers run on their own threads while the
        // caller samples (a current-thread runtime only runs inside `Runtime::block_on`).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
            .enable_all()
            .build()
            .context("building the client runtime")?;
        Ok(TokioEcho {
            shared: (0..threads).map(|_| Arc::default()).collect(),
            cfg,
            runtime,
            start: watch::channel(None).0,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        })
    }
}

impl LoadDriver for TokioEcho {
    fn shared(&self) -> Vec<Arc<SharedStats>> {
        self.shared.clone()
    }

    fn begin_connect(&mut self) -> anyhow::Result<()> {
        let window = Arc::new(Semaphore::new(CONNECT_WINDOW));
        let cfg = Arc::new(self.cfg.clone());
        let pattern: Arc<[u8]> = pattern(cfg.size).into();
        for i in 0..cfg.connections {
            let task = ConnTask {
                i,
                cfg: cfg.clone(),
                pattern: pattern.clone(),
                shared: self.shared[i % self.shared.len()].clone(),
                start: self.start.subscribe(),
                stop: self.stop.subscribe(),
                window: window.clone(),
            };
            self.tasks.push(self.runtime.spawn(task.run()));
        }
        Ok(())
    }

    fn begin_load(&mut self, start: Instant) -> anyhow::Result<()> {
        self.start.send_replace(Some(start));
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let this = *self;
        this.stop.send_replace(true);
        let tasks = this.tasks;
        this.runtime.block_on(async move {
            let all = async {
                for t in tasks {
                    let _ = t.await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
        });
        this.runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

struct ConnTask {
    i: usize,
    cfg: Arc<EchoConfig>,
    pattern: Arc<[u8]>,
    shared: Arc<SharedStats>,
    start: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
    window: Arc<Semaphore>,
}

/// Latencies and counters buffered by one task, moved into its shard's stats in batches.
struct Batch {
    latencies: Vec<Duration>,
    sent: u64,
    received: u64,
    last_flush: Instant,
}

impl Batch {
    fn flush(&mut self, shared: &SharedStats) {
        shared
            .messages
            .fetch_add(self.latencies.len() as u64, Ordering::Relaxed);
        shared.bytes_sent.fetch_add(self.sent, Ordering::Relaxed);
        shared
            .bytes_received
            .fetch_add(self.received, Ordering::Relaxed);
        shared.with_latencies(|h| {
            for &l in &self.latencies {
                record_latency(h, l);
            }
        });
        self.latencies.clear();
        self.sent = 0;
        self.received = 0;
        self.last_flush = Instant::now();
    }
}

impl ConnTask {
    async fn run(mut self) {
        let stream = {
            let _permit = self.window.acquire().await;
            match self.connect().await {
                Ok(s) => s,
                Err(e) => {
                    self.shared.connect_failed(e.raw_os_error());
                    return;
                }
            }
        };
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        let unexpected = self.drive(stream).await;
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        if unexpected {
            self.shared
                .closed_unexpectedly
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let socket = if self.cfg.target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(bind) = self.cfg.bind_for(self.i) {
            socket.bind(bind)?;
        }
        let stream = socket.connect(self.cfg.target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Returns true when the connection ended for any reason but the bench stopping.
    async fn drive(&mut self, mut stream: tokio::net::TcpStream) -> bool {
        let start = tokio::select! {
            s = self.start.wait_for(Option::is_some) => match s { Ok(s) => s.expect("checked"), Err(_) => return false },
            _ = self.stop.wait_for(|s| *s) => return false,
        };
        if self.cfg.idle {
            let _ = self.stop.wait_for(|s| *s).await;
            return false;
        }
        let mut conn = self.cfg.new_conn(self.i, start);
        let (mut rd, mut wr) = stream.split();
        let mut rbuf = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(self.cfg.size * self.cfg.depth);
        let mut batch = Batch {
            latencies: Vec::with_capacity(256),
            sent: 0,
            received: 0,
            last_flush: Instant::now(),
        };
        // Bytes of `out` already written. Writes and reads proceed together, so a window larger
        // than the socket buffers cannot deadlock against a server blocked on writing back.
        let mut written = 0;
        let unexpected = loop {
            let now = Instant::now();
            if written == out.len() {
                out.clear();
                written = 0;
            }
            conn.poll_send(now, &self.pattern, &mut out);
            let wake = conn.next_wakeup();
            let sleep = tokio::time::sleep_until(wake.unwrap_or(now).into());
            tokio::select! {
                r = wr.write(&out[written..]), if written < out.len() => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => {
                        written += n;
                        batch.sent += n as u64;
                    }
                },
                r = rd.read(&mut rbuf) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => {
                        batch.received += n as u64;
                        let done = Instant::now();
                        let lat = &mut batch.latencies;
                        if conn.on_bytes(&rbuf[..n], &self.pattern, |s| lat.push(done - s)).is_err() {
                            self.shared.mismatches.fetch_add(1, Ordering::Relaxed);
                            break true;
                        }
                    }
                },
                _ = sleep, if wake.is_some() => {}
                _ = self.stop.wait_for(|s| *s) => break false,
            }
            if batch.latencies.len() >= 256 || batch.last_flush.elapsed() >= FLUSH_EVERY {
                batch.flush(&self.shared);
            }
        };
        batch.flush(&self.shared);
        unexpected
    }
}
