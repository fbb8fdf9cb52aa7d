//! Starting the tokio baseline server for `--baseline tokio`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// A running `tokio-echo`, killed when dropped.
pub struct BaselineServer {
    pub addr: SocketAddr,
    child: Child,
}

impl BaselineServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tokio-echo` is built next to `ringport-bench`.
fn tokio_echo_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating ringport-bench")?;
    let path = exe.with_file_name("tokio-echo");
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build -p ringport-bench --release`",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `taskset -c CPU tokio-echo --listen 127.0.0.1:0` and reads its address.
pub fn start_tokio_echo(cpu: usize) -> anyhow::Result<BaselineServer> {
    let exe = tokio_echo_path()?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(&exe)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting taskset tokio-echo (is util-linux's taskset installed?)")?;
    let stdout = child.stdout.take().context("tokio-echo stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading tokio-echo's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok(BaselineServer { addr, child }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tokio-echo printed {line:?}, expected `listening on ADDR`")
        }
    }
}
