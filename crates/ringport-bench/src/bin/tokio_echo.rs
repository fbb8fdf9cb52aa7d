//! The in-repo tokio baseline: an idiomatic tokio echo server.
//!
//! One task per connection; each task `read`s into a buffer and `write_all`s what it read.
//! This is the plain way most people would write an echo server with tokio, which is the point:
//! ringport's numbers are reported as ratios against it, measured in the same run.
//!
//! `--threads 1` (the default) uses the current-thread runtime, because the benchmark pins the
//! server to one core; `--threads N > 1` uses the multi-thread runtime with N workers.
//! Line 1 of stdout is `listening on ADDR` (with the real port when `--listen` asks for port 0).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(
    name = "tokio-echo",
    about = "tokio echo server (baseline for ringport benchmarks)"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout line 1).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads: 1 = current-thread runtime, N > 1 = multi-thread runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Read buffer size per connection, bytes.
    #[arg(long, default_value_t = 4096)]
    buffer: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let buffer = args.buffer;
                    tokio::spawn(async move {
                        // A connection error only ends that connection.
                        let _ = echo(stream, buffer).await;
                    });
                }
                // EMFILE and friends: back off briefly instead of spinning on accept.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn echo(mut stream: TcpStream, buffer: usize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; buffer];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
