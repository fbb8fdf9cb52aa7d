//! CPU time and resident memory of a process, read from /proc (no unsafe, no libc calls).

use anyhow::Context;

/// Linux reports utime/stime in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    pub pid: u32,
    /// utime + stime of the whole process (all threads, live and exited), seconds.
    pub cpu_secs: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse(pid, &stat, &status)
}

pub fn sample_self() -> anyhow::Result<ProcSample> {
    sample(std::process::id())
}

/// The pid of `ksoftirqd/<cpu>`: the kernel thread that is charged the softirq work (loopback
/// TCP receive processing) of io_uring sends made on that core, which would otherwise look
/// free (shared/design.md, "What a send costs").
pub fn ksoftirqd_pid(cpu: usize) -> anyhow::Result<u32> {
    let want = format!("ksoftirqd/{cpu}");
    for (pid, dir) in processes()? {
        if let Ok(comm) = std::fs::read_to_string(dir.join("comm")) {
            if comm.trim_end() == want {
                return Ok(pid);
            }
        }
    }
    anyhow::bail!("no {want} thread in /proc")
}

/// Every process in /proc: its pid and its /proc directory.
fn processes() -> anyhow::Result<Vec<(u32, std::path::PathBuf)>> {
    Ok(std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, e.path()))
        })
        .collect())
}

pub fn parse(pid: u32, stat: &str, status: &str) -> anyhow::Result<ProcSample> {
    // The command name (field 2) is in parentheses and may contain spaces: split after ')'.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()
            .context("bad tick count")? as f64)
    };
    let cpu_secs = (tick(11)? + tick(12)?) / USER_HZ;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        pid,
        cpu_secs,
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (tokio echo) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 2 0 1 1 1";
        let status = "Name:\ttokio\nVmRSS:\t   12345 kB\nThreads:\t2\n";
        let s = parse(42, stat, status).unwrap();
        assert_eq!(s.cpu_secs, 3.0);
        assert_eq!(s.rss_kib, 12345);
    }

    #[test]
    fn reads_its_own_process() {
        let s = sample_self().unwrap();
        assert!(s.rss_kib > 0);
    }
}

/// The process listening on TCP `port` (any address), found through /proc/net/tcp{,6} and the
/// socket inodes in /proc/PID/fd; `None` if no visible process listens there.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for (pid, dir) in processes().ok()? {
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(ino) = link
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    if inodes.contains(&ino) {
                        return Some(pid);
                    }
                }
            }
        }
    }
    None
}

/// Inodes of the sockets in LISTEN state (st 0A) on `port` in a /proc/net/tcp table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    let want = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (local_port == want && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn finds_the_listening_inode_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:1B58 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n\
   2: 00000000:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 7000), vec![4242]);
        assert_eq!(listening_inodes(table, 7001), vec![4444]);
        assert!(listening_inodes(table, 7002).is_empty());
    }

    #[test]
    fn finds_this_test_process_listener_from_outside_only() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // The only listener is this process's own, which the search skips (the bench must
        // not mistake itself for the server).
        assert_eq!(pid_listening_on(port), None);
    }
}
