//! Source addresses: how many connections one local address can open to one server address,
//! and spreading a run over 127.0.0.0/8 when it needs more.
//!
//! Every TCP connection to the same server address and port needs its own local
//! (address, port) pair, and the kernel hands out ports from `net.ipv4.ip_local_port_range`
//! (32768–60999 by default: 28,232 ports). A run that asks for more connections than that
//! from one address fails the rest with EADDRNOTAVAIL. On loopback every address of
//! 127.0.0.0/8 is local, so the bench binds its connections round robin to as many of them
//! as the count needs (from 127.0.0.2; 127.0.0.1 is left to everything else on the machine).

use std::net::{IpAddr, Ipv4Addr};

/// Ports of one address the planner leaves unused (other programs' connections, sockets in
/// TIME_WAIT from an earlier run).
pub const PORT_MARGIN_PERCENT: usize = 20;

/// The kernel's ephemeral port range size (`/proc/sys/net/ipv4/ip_local_port_range`), or
/// the default range's size when it cannot be read.
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(60999 - 32768 + 1)
}

fn parse_port_range(s: &str) -> Option<usize> {
    let mut it = s.split_whitespace().map(|v| v.parse::<usize>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Connections the planner puts on one source address, given `ports` ephemeral ports.
pub fn per_address(ports: usize) -> usize {
    (ports * (100 - PORT_MARGIN_PERCENT) / 100).max(1)
}

/// The source addresses for `connections` connections: `explicit` if given (checked to be
/// enough), none (the kernel's choice) when one address suffices, else the first
/// `ceil(connections / per_address)` addresses from 127.0.0.2 up.
pub fn plan(
    connections: usize,
    explicit: Vec<IpAddr>,
    per_address: usize,
) -> Result<Vec<IpAddr>, String> {
    let per_address = per_address.max(1);
    let needed = connections.div_ceil(per_address);
    if !explicit.is_empty() {
        if explicit.len() < needed {
            return Err(format!(
                "--source-addrs gives {} address(es); {connections} connections need at least \
                 {needed} ({per_address} per address); leave --source-addrs out to spread over \
                 127.0.0.0/8 automatically",
                explicit.len()
            ));
        }
        return Ok(explicit);
    }
    if needed <= 1 {
        return Ok(Vec::new());
    }
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
    if needed as u64 > u64::from(last - first + 1) {
        return Err(format!(
            "{connections} connections need more than 127.0.0.0/8"
        ));
    }
    Ok((first..first + needed as u32)
        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_when_it_is_enough() {
        assert_eq!(plan(20_000, vec![], 22_585), Ok(vec![]));
        assert_eq!(plan(22_585, vec![], 22_585), Ok(vec![]));
    }

    #[test]
    fn spreads_over_loopback_as_needed() {
        let v = plan(100_000, vec![], 22_585).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].to_string(), "127.0.0.2");
        assert_eq!(v[4].to_string(), "127.0.0.6");
        let m = plan(1_000_000, vec![], 22_585).unwrap();
        assert_eq!(m.len(), 45);
        assert!(m.iter().all(IpAddr::is_loopback));
        // Past the last octet the addresses carry into the next one.
        let big = plan(300 * 10, vec![], 10).unwrap();
        assert_eq!(big[254].to_string(), "127.0.1.0");
    }

    #[test]
    fn explicit_addresses_must_be_enough() {
        let two = vec!["127.0.0.9".parse().unwrap(), "127.0.0.10".parse().unwrap()];
        assert_eq!(plan(40_000, two.clone(), 22_585), Ok(two.clone()));
        let err = plan(100_000, two, 22_585).unwrap_err();
        assert!(err.contains("need at least 5"), "{err}");
    }

    #[test]
    fn port_range_parses() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
        assert_eq!(parse_port_range("1024 65535"), Some(64_512));
        assert_eq!(parse_port_range("garbage"), None);
        assert_eq!(per_address(28_232), 22_585);
    }
}
