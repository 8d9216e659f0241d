//! The one unsafe step of starting a session program: a vfork-style clone
//! (`CLONE_VM | CLONE_VFORK`, as glibc's `posix_spawn` makes) whose child takes on the
//! session's stdio, session, limits, umask, identity and home, then execs the program. No
//! page table is copied, so the cost does not grow with the daemon's memory, as a fork's does
//! (std forks whenever a uid, groups or a `pre_exec` closure is set).
//!
//! The child shares the daemon's memory and its descriptor table (`CLONE_FILES`) until its
//! first step, which gives it a table of its own holding only the daemon's first few
//! descriptors (`close_range(…, CLOSE_RANGE_UNSHARE)`): the stdio, which the spawner put at
//! reserved low numbers; so neither copying nor closing costs more with every session the
//! daemon holds. It runs on a stack of its own while the calling
//! thread is suspended (until the exec, or the child's exit). So it makes raw system calls
//! only, on data prepared before the clone, and never allocates, locks or unwinds: glibc's
//! `setuid`, `setgid` and `setgroups` wrappers are not used (they signal every thread of the
//! process they believe they are in, which is the daemon's), and every signal is blocked
//! around the clone (a handler of the daemon's must never run in the child) and set back to
//! its default action in the child before the exec. A step that fails is written into the
//! shared [`Plan`] with its errno; the child then exits 127 and the caller reaps it and
//! reports the step.

use std::ffi::{c_int, c_void};

use nix::libc;

/// What the child is to do, as raw pointers into memory the caller owns and keeps alive (and
/// unchanged) until [`clone_vfork`] returns.
#[repr(C)]
pub struct Plan {
    pub exe: *const libc::c_char,
    /// NULL-terminated.
    pub argv: *const *const libc::c_char,
    /// NULL-terminated.
    pub envp: *const *const libc::c_char,
    /// The descriptors that become 0, 1 and 2 (each above 2, below `keep_below`).
    pub stdio: [c_int; 3],
    /// The child's own descriptor table is a copy of the daemon's below this number only:
    /// the clone shares the daemon's table (copying it, and closing the copy at exec, costs
    /// time in proportion to the daemon's open descriptors: its sessions).
    pub keep_below: c_int,
    /// Make stdin the controlling terminal of the new session.
    pub terminal: bool,
    pub limits: *const (c_int, libc::rlimit),
    pub limits_len: usize,
    pub umask: libc::mode_t,
    /// Switch to this user (with `groups`) and enter `home` with its rights, or `/` if it
    /// cannot; otherwise enter `home` or fail.
    pub switch: bool,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: *const libc::gid_t,
    pub groups_len: usize,
    pub home: *const libc::c_char,
    /// The daemon's pid: a child whose parent is another (the daemon died) exits at once.
    pub daemon: libc::pid_t,
    /// Written by the child: the step that failed, and its errno.
    pub failed: Option<(Step, c_int)>,
}

/// The child's steps, as reported when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stdio,
    Session,
    Terminal,
    Identity,
    Home,
    ParentDeath,
    Exec,
}

impl Step {
    /// What could not be done, for the error message.
    pub fn what(self) -> &'static str {
        match self {
            Self::Stdio => "cannot set up the program's input and output",
            Self::Session => "cannot start a session",
            Self::Terminal => "cannot take the terminal",
            Self::Identity => "cannot become the session's user",
            Self::Home => "cannot enter the home directory",
            Self::ParentDeath => "cannot follow the daemon's death",
            Self::Exec => "cannot run the program",
        }
    }
}

/// Waits for our own child `pid` to end and reaps it.
pub fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a status slot of our own.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

/// Starts the child described by `plan` on `stack` and returns its pid once it has exec'd;
/// or reaps it and returns the step that failed.
///
/// # Safety
/// Every pointer in `plan` must be valid and NUL-/NULL-terminated as documented, and
/// `stack` must not be used by anything else until this returns. The calling thread must
/// outlive the child (its parent-death signal follows that thread).
pub unsafe fn clone_vfork(plan: &mut Plan, stack: &mut [u8]) -> std::io::Result<libc::pid_t> {
    plan.failed = None;
    // 16-byte aligned top of the child's stack (it grows down).
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: raw syscalls on valid pointers; the child runs `child_main` on its own stack
    // with `plan`, both valid until it has exec'd or exited, which CLONE_VFORK waits for.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all,
            &mut old,
            8usize,
        );
        let pid = libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            std::ptr::from_mut(plan).cast(),
        );
        let error = std::io::Error::last_os_error();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        if pid < 0 {
            return Err(error);
        }
        pid
    };
    // SAFETY: the child wrote it before it exec'd or exited; it is done with `plan`.
    let Some((step, errno)) = (unsafe { std::ptr::read_volatile(&plan.failed) }) else {
        return Ok(pid);
    };
    // It has exited (or is exiting) with 127.
    reap(pid);
    let error = std::io::Error::from_raw_os_error(errno);
    Err(std::io::Error::new(
        error.kind(),
        format!("{}: {error}", step.what()),
    ))
}

/// A raw system call's result: Err(errno) when it failed.
///
/// # Safety
/// As the system call `nr` with these arguments.
unsafe fn sys(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> Result<(), c_int> {
    // SAFETY: as the caller's contract.
    let rc = unsafe { libc::syscall(nr, a, b, c, d) };
    if rc < 0 {
        // SAFETY: errno of the thread whose TLS the child runs on, written by `syscall`.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(())
    }
}

/// The kernel's `struct sigaction` (x86-64 and aarch64 layout), for SIG_DFL.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child: runs on its own stack, in the daemon's memory, with every signal blocked.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    let plan = arg.cast::<Plan>();
    // SAFETY: `plan` is valid until exec or exit (CLONE_VFORK); only raw syscalls follow.
    unsafe {
        if let Err(failed) = child_steps(&*plan) {
            std::ptr::write_volatile(&raw mut (*plan).failed, Some(failed));
        }
        libc::syscall(libc::SYS_exit_group, 127);
    }
    127
}

/// Everything the child does, in order; returns only on failure (the exec replaced it).
///
/// # Safety
/// Only in the vfork child, with `plan` valid.
unsafe fn child_steps(plan: &Plan) -> Result<(), (Step, c_int)> {
    use libc::{
        PR_SET_PDEATHSIG, SIG_SETMASK, SIGKILL, SIGSTOP, SYS_chdir, SYS_close_range, SYS_dup3,
        SYS_execve, SYS_getppid, SYS_ioctl, SYS_prctl, SYS_prlimit64, SYS_rt_sigaction,
        SYS_rt_sigprocmask, SYS_setgid, SYS_setgroups, SYS_setsid, SYS_setuid, SYS_umask,
        SYS_unshare, TIOCSCTTY,
    };
    const CLOSE_RANGE_UNSHARE: usize = 2;
    // SAFETY: raw syscalls on memory the plan points to; see the module doc.
    unsafe {
        // Default actions for every signal (the daemon ignores SIGPIPE; an ignored signal
        // would stay ignored across the exec). This process has its own handler table.
        let default = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64usize {
            if sig != SIGKILL as usize && sig != SIGSTOP as usize {
                let _ = sys(SYS_rt_sigaction, sig, &raw const default as usize, 0, 8);
            }
        }
        // A table of its own, with only the daemon's first few descriptors (the stdio among
        // them); a kernel before 5.9 copies the whole table instead.
        let keep = plan.keep_below as usize;
        if sys(
            SYS_close_range,
            keep,
            u32::MAX as usize,
            CLOSE_RANGE_UNSHARE,
            0,
        )
        .is_err()
        {
            sys(SYS_unshare, libc::CLONE_FILES as usize, 0, 0, 0).map_err(|e| (Step::Stdio, e))?;
        }
        for (to, &from) in plan.stdio.iter().enumerate() {
            sys(SYS_dup3, from as usize, to, 0, 0).map_err(|e| (Step::Stdio, e))?;
        }
        // Nothing else of the daemon's reaches the program (another user's terminal must
        // never leak into this session).
        let _ = sys(SYS_close_range, 3, u32::MAX as usize, 0, 0);
        sys(SYS_setsid, 0, 0, 0, 0).map_err(|e| (Step::Session, e))?;
        if plan.terminal {
            sys(SYS_ioctl, 0, TIOCSCTTY as usize, 0, 0).map_err(|e| (Step::Terminal, e))?;
        }
        for i in 0..plan.limits_len {
            let (resource, limit) = &*plan.limits.add(i);
            // A limit the daemon could not restore (it lowered its own hard limit) is left
            // as it is: the program still starts.
            let _ = sys(
                SYS_prlimit64,
                0,
                *resource as usize,
                limit as *const _ as usize,
                0,
            );
        }
        let _ = sys(SYS_umask, plan.umask as usize, 0, 0, 0);
        if plan.switch {
            let identity = |e| (Step::Identity, e);
            sys(SYS_setgroups, plan.groups_len, plan.groups as usize, 0, 0).map_err(identity)?;
            sys(SYS_setgid, plan.gid as usize, 0, 0, 0).map_err(identity)?;
            sys(SYS_setuid, plan.uid as usize, 0, 0, 0).map_err(identity)?;
            // Entered with the user's rights; `/` if it cannot be, as sshd does.
            if sys(SYS_chdir, plan.home as usize, 0, 0, 0).is_err() {
                let _ = sys(SYS_chdir, c"/".as_ptr() as usize, 0, 0, 0);
            }
        } else {
            sys(SYS_chdir, plan.home as usize, 0, 0, 0).map_err(|e| (Step::Home, e))?;
        }
        // After the identity switch (which clears it): die with the daemon, and at once if
        // it is already gone.
        sys(SYS_prctl, PR_SET_PDEATHSIG as usize, SIGKILL as usize, 0, 0)
            .map_err(|e| (Step::ParentDeath, e))?;
        if libc::syscall(SYS_getppid) != libc::c_long::from(plan.daemon) {
            libc::syscall(libc::SYS_exit_group, 1);
        }
        let none: u64 = 0;
        let _ = sys(
            SYS_rt_sigprocmask,
            SIG_SETMASK as usize,
            &raw const none as usize,
            0,
            8,
        );
        let error = sys(
            SYS_execve,
            plan.exe as usize,
            plan.argv as usize,
            plan.envp as usize,
            0,
        );
        Err((Step::Exec, error.err().unwrap_or(libc::ENOEXEC)))
    }
}
