//! Engine errors: typed, each variant saying its cause.

use std::io;
use std::net::SocketAddr;

/// Why the engine could not start or stopped abnormally.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// io_uring cannot be set up on this host (seccomp, sysctl, old kernel).
    UringUnavailable {
        /// The setup error (EPERM, ENOSYS, ...).
        source: io::Error,
        /// `/proc/sys/kernel/io_uring_disabled`, when readable.
        sysctl_disabled: Option<String>,
    },
    /// The kernel lacks a feature the engine needs (provided buffer rings, multishot ops).
    KernelTooOld {
        /// What was missing.
        feature: &'static str,
        /// The error the kernel gave.
        source: io::Error,
    },
    /// The listener could not be created or bound.
    Listen {
        /// The address we tried.
        addr: SocketAddr,
        /// The bind/listen error.
        source: io::Error,
    },
    /// A configuration value is out of range.
    Config(String),
    /// Any other setup failure (thread spawn, eventfd, mmap...).
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A shard thread panicked (a bug in a handler or the engine).
    ShardPanicked(usize),
    /// A shard's ring kept refusing submissions (`io_uring_enter` failed with an error that
    /// retrying cannot fix, or for longer than a few seconds): the shard closed its
    /// connections and stopped.
    RingFailed {
        /// The shard that stopped.
        shard: usize,
        /// The last submit error.
        source: io::Error,
    },
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::UringUnavailable {
                source,
                sysctl_disabled,
            } => {
                write!(f, "io_uring is not available on this host: {source}")?;
                match source.raw_os_error() {
                    Some(libc::EPERM) => write!(
                        f,
                        " (EPERM: blocked by policy — a container seccomp profile such as Docker's default, or the sysctl kernel.io_uring_disabled)"
                    )?,
                    Some(libc::ENOSYS) => write!(f, " (ENOSYS: the kernel was built without io_uring)")?,
                    _ => {}
                }
                if let Some(v) = sysctl_disabled {
                    write!(f, "; kernel.io_uring_disabled = {v}")?;
                    if v != "0" {
                        write!(f, " (set it to 0, or run as a member of kernel.io_uring_group when it is 1)")?;
                    }
                }
                Ok(())
            }
            EngineError::KernelTooOld { feature, source } => {
                write!(
                    f,
                    "the kernel lacks {feature} (need Linux 6.1 or newer): {source}"
                )
            }
            EngineError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            EngineError::Config(msg) => write!(f, "invalid engine configuration: {msg}"),
            EngineError::Setup { what, source } => {
                write!(f, "engine setup failed ({what}): {source}")
            }
            EngineError::ShardPanicked(i) => write!(f, "shard {i} panicked"),
            EngineError::RingFailed { shard, source } => write!(
                f,
                "shard {shard} stopped: its io_uring kept refusing submissions ({source})"
            ),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::UringUnavailable { source, .. }
            | EngineError::KernelTooOld { source, .. }
            | EngineError::Listen { source, .. }
            | EngineError::Setup { source, .. }
            | EngineError::RingFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a payload was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed, closing, or the id is stale.
    NotConnected,
    /// Queued bytes would pass the high-water mark (with `SlowConsumerPolicy::Close`, the
    /// connection is also being closed).
    SlowConsumer,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotConnected => f.write_str("connection is not open"),
            SendError::SlowConsumer => f.write_str("send queue is over its high-water mark"),
        }
    }
}

impl std::error::Error for SendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_unavailable_says_why_and_what_to_do() {
        let e = EngineError::UringUnavailable {
            source: io::Error::from_raw_os_error(libc::EPERM),
            sysctl_disabled: Some("2".into()),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("io_uring is not available on this host: "),
            "{msg}"
        );
        assert!(msg.contains("EPERM: blocked by policy"), "{msg}");
        assert!(msg.contains("seccomp"), "{msg}");
        assert!(msg.contains("kernel.io_uring_disabled = 2"), "{msg}");
        assert!(msg.contains("set it to 0"), "{msg}");
        assert!(std::error::Error::source(&e).is_some());

        let e = EngineError::UringUnavailable {
            source: io::Error::from_raw_os_error(libc::ENOSYS),
            sysctl_disabled: Some("0".into()),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("ENOSYS: the kernel was built without io_uring"),
            "{msg}"
        );
        assert!(
            msg.ends_with("kernel.io_uring_disabled = 0"),
            "no advice when enabled: {msg}"
        );

        let e = EngineError::UringUnavailable {
            source: io::Error::from_raw_os_error(libc::ENOMEM),
            sysctl_disabled: None,
        };
        let msg = e.to_string();
        assert!(
            !msg.contains("EPERM") && !msg.contains("io_uring_disabled"),
            "{msg}"
        );
    }
}
