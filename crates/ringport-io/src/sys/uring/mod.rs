//! The io_uring backend: ring setup and feature probing, the provided-buffer ring, and the
//! operation builders.

mod bufring;
mod driver;

pub(crate) use driver::{SubmitFailures, UringDriver};

use crate::{EngineConfig, EngineError};

/// Why io_uring cannot serve on this host.
pub(crate) enum Unusable {
    /// Blocked or missing for good (policy, kernel build or version): fall back.
    Blocked(String),
    /// Anything else (e.g. ENOMEM): an error, not a reason to fall back.
    Failed(EngineError),
}

/// Opcodes the engine issues (`Bind` only for outbound connects with a bind address, so a
/// kernel without it can still serve; such a connect then fails with `ConnectFailed`).
const NEEDED: &[(u8, &str)] = &[
    (io_uring::opcode::Accept::CODE, "ACCEPT"),
    (io_uring::opcode::Recv::CODE, "RECV"),
    (io_uring::opcode::Send::CODE, "SEND"),
    (io_uring::opcode::SendMsg::CODE, "SENDMSG"),
    (io_uring::opcode::Shutdown::CODE, "SHUTDOWN"),
    (io_uring::opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (io_uring::opcode::Close::CODE, "CLOSE"),
    (io_uring::opcode::Socket::CODE, "SOCKET"),
    (io_uring::opcode::Connect::CODE, "CONNECT"),
    (io_uring::opcode::Read::CODE, "READ"),
    (io_uring::opcode::FixedFdInstall::CODE, "FIXED_FD_INSTALL"),
];

/// Sets up a small driver the way a shard does (ring, direct-descriptor table, buffer ring)
/// and checks the opcodes the engine issues.
pub(crate) fn probe(cfg: &EngineConfig) -> Result<(), Unusable> {
    let small = EngineConfig {
        ring_entries: 8,
        recv_buffers: 2,
        recv_buffer_size: 64,
        ..cfg.clone()
    };
    let driver = match UringDriver::new(&small, 4) {
        Ok(d) => d,
        Err(e) => return Err(classify(e)),
    };
    let missing: Vec<&str> = match driver.probe_opcodes(NEEDED) {
        Ok(missing) => missing,
        Err(e) => return Err(Unusable::Blocked(format!("opcode probe failed: {e}"))),
    };
    if !missing.is_empty() {
        return Err(Unusable::Blocked(format!(
            "the kernel lacks opcodes {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn classify(e: EngineError) -> Unusable {
    match e {
        EngineError::UringUnavailable {
            ref source,
            ref sysctl_disabled,
        } => {
            let errno = source.raw_os_error();
            let disabled = sysctl_disabled.as_deref().is_some_and(|v| v != "0");
            if matches!(errno, Some(libc::EPERM | libc::ENOSYS | libc::EACCES)) || disabled {
                Unusable::Blocked(e.to_string())
            } else {
                Unusable::Failed(e)
            }
        }
        EngineError::KernelTooOld { .. } => Unusable::Blocked(e.to_string()),
        EngineError::Setup { ref source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::EPERM | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            Unusable::Blocked(e.to_string())
        }
        e => Unusable::Failed(e),
    }
}
