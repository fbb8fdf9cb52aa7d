//! The echo benchmark: per-connection state machine ([`conn`]), transports that drive it
//! ([`engine_client`] on ringport-io, [`tokio_client`] as a cross-check), and their shared
//! configuration.

pub mod conn;
#[cfg(feature = "engine")]
pub mod engine_client;
pub mod tokio_client;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use conn::{EchoConn, Pacing};

use crate::stats::{per_connection_interval, OpenLoopSchedule};

/// What every echo transport needs to know.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    pub target: SocketAddr,
    pub connections: usize,
    /// Bytes per message (>= 8: the sequence number).
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Total open-loop rate (messages per second over all connections); None = closed loop.
    pub rate: Option<f64>,
    /// Local source addresses, used round-robin (empty = let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Client threads (engine shards, or tokio workers).
    pub threads: usize,
    /// Open the connections and hold them without sending (memory-per-connection runs).
    pub idle: bool,
}

impl EchoConfig {
    /// Source address for connection `i`.
    pub fn bind_for(&self, i: usize) -> Option<SocketAddr> {
        (!self.sources.is_empty()).then(|| SocketAddr::new(self.sources[i % self.sources.len()], 0))
    }

    /// A fresh state machine for connection `i`; open-loop connections get evenly spread phases.
    pub fn new_conn(&self, i: usize, start: Instant) -> EchoConn {
        let pacing = match self.rate {
            None => Pacing::ClosedLoop,
            Some(rate) => {
                let interval = per_connection_interval(rate, self.connections);
                let phase = interval
                    .mul_f64((i % self.connections.max(1)) as f64 / self.connections.max(1) as f64);
                Pacing::OpenLoop(OpenLoopSchedule::new(start, interval, phase))
            }
        };
        EchoConn::new(self.size, self.depth, pacing)
    }
}

/// Parses `127.0.0.2-127.0.0.250`, a single address, or a comma-separated list of either.
pub fn parse_source_addrs(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            None => out.push(part.parse().map_err(|e| format!("{part}: {e}"))?),
            Some((a, b)) => {
                let a: std::net::Ipv4Addr = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
                let b: std::net::Ipv4Addr = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a {
                    return Err(format!("{part}: range ends before it starts"));
                }
                out.extend((a..=b).map(|v| IpAddr::V4(v.into())));
            }
        }
    }
    if let Some(bad) = out.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!(
            "{bad} is not a loopback address: the bench only loads 127.0.0.0/8 and ::1"
        ));
    }
    Ok(out)
}

/// How long to wait for connections: generous, but bounded.
pub fn connect_timeout(connections: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(connections as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_parse_and_stay_on_loopback() {
        let v = parse_source_addrs("127.0.0.2-127.0.0.250").unwrap();
        assert_eq!(v.len(), 249);
        assert_eq!(v[0].to_string(), "127.0.0.2");
        assert_eq!(parse_source_addrs("127.0.0.1,::1").unwrap().len(), 2);
        assert!(parse_source_addrs("10.0.0.1").is_err());
        assert!(parse_source_addrs("127.0.0.9-127.0.0.3").is_err());
    }
}
