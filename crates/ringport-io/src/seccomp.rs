//! Simulating a host that blocks io_uring, for tests: a seccomp filter that makes
//! `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with EPERM, as Docker's
//! default profile does, installed in a child process before it runs its program.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `BPF_LD | BPF_W | BPF_ABS`: load the 32-bit word at an offset of `seccomp_data`.
const LD_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ: u16 = 0x15;
/// `BPF_RET | BPF_K`.
const RET: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const NR: u32 = 0;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The filter: EPERM for the three io_uring system calls, everything else allowed.
fn io_uring_denied() -> Vec<libc::sock_filter> {
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut prog = vec![stmt(LD_ABS, NR)];
    for nr in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ] {
        // Equal: fall through to the EPERM return; else skip it.
        prog.push(libc::sock_filter {
            code: JEQ,
            jt: 0,
            jf: 1,
            k: nr as u32,
        });
        prog.push(stmt(RET, eperm));
    }
    prog.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
    prog
}

/// Makes `cmd`'s process (and everything it runs) see io_uring as blocked by policy:
/// `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with EPERM. For tests of
/// the epoll fallback; the filter cannot be lifted once the child runs.
pub fn deny_io_uring(cmd: &mut Command) -> &mut Command {
    // Built before the fork: the child may only make async-signal-safe calls.
    let prog = io_uring_denied();
    // SAFETY: the closure runs in the forked child before exec and makes only two prctl
    // calls (async-signal-safe, no allocation); `prog` was built in the parent and is only
    // read, through a pointer that stays valid for the closure's life.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program's shape (its effect on a real process is tested with the gateway, in
    /// crates/ringport/tests/cli.rs).
    #[test]
    fn the_filter_denies_the_three_calls_and_allows_the_rest() {
        let prog = io_uring_denied();
        assert_eq!(prog.len(), 1 + 3 * 2 + 1);
        assert_eq!(prog.last().unwrap().k, libc::SECCOMP_RET_ALLOW);
        let denied: Vec<u32> = prog.iter().filter(|f| f.code == JEQ).map(|f| f.k).collect();
        assert_eq!(
            denied,
            [
                libc::SYS_io_uring_setup as u32,
                libc::SYS_io_uring_enter as u32,
                libc::SYS_io_uring_register as u32
            ]
        );
    }
}
