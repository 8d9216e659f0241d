//! Starting session programs without copying the daemon, and waiting for them. A fork copies
//! the daemon's page tables, so its cost grows with the daemon's memory (every idle session
//! made the next start slower), and std forks whenever a uid, groups or a `pre_exec` closure
//! is set. So keyport starts them itself, with a vfork-style clone (`vfork.rs`) whose child
//! takes on the session's identity and execs the program: the cost of one `posix_spawn`,
//! flat in the daemon's size, and no second exec of a helper.
//!
//! Spawns run on one thread of their own (the [`Spawner`]), not on the async workers (the
//! clone suspends its thread until the exec), and that thread lives as long as the daemon: a
//! session program's parent-death signal fires when the *thread* that started it ends. The
//! program is waited for through a pidfd ([`SessionChild`]), and killed if dropped before it
//! was.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc;

use nix::libc;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::process::{Identity, Program, Switch, argv, executable};
use super::vfork;

/// How a channel's program is started, the same for pipes and a pty.
pub struct Launch {
    pub exe: std::path::PathBuf,
    pub argv0: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub home: String,
    pub switch: Option<Switch>,
    pub umask: u32,
}

/// How the program leads its session: a session of its own (pipes), or one whose controlling
/// terminal is its stdin (a pty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leader {
    Session,
    Terminal,
}

impl Launch {
    /// What `identity` runs for `program`, with `env` and the session umask.
    pub fn new(
        identity: &Identity,
        program: &Program,
        env: crate::secrets::env::SessionEnv,
        umask: u32,
    ) -> Self {
        let (argv0, args) = argv(&super::process::login_shell(&identity.os), program);
        Self {
            exe: executable(identity, program),
            argv0,
            args,
            env: env.to_os_pairs(),
            home: identity.os.home.clone(),
            switch: identity.switch.clone(),
            umask,
        }
    }
}

/// Everything the child needs, owned, with the raw pointers into it that the clone's child
/// reads (`vfork::Plan`). Built off the spawner thread; moved there whole.
struct Prepared {
    exe: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    home: CString,
    groups: Vec<libc::gid_t>,
    /// The child's ends of its stdio, closed here once it has them.
    stdio: [OwnedFd; 3],
    terminal: bool,
    umask: libc::mode_t,
    switch: Option<(libc::uid_t, libc::gid_t)>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same value, which move with it.
unsafe impl Send for Prepared {}

fn cstring(bytes: &[u8], what: &str) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the program's {what} holds a NUL byte"),
        )
    })
}

/// A NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Launch {
    /// The plan for this program, led as `leader`, with `stdio` (the child's ends) as its
    /// 0, 1 and 2.
    fn prepare(&self, leader: Leader, stdio: [OwnedFd; 3]) -> std::io::Result<Prepared> {
        let exe = cstring(self.exe.as_os_str().as_bytes(), "path")?;
        let argv = std::iter::once(&self.argv0)
            .chain(&self.args)
            .map(|a| cstring(a.as_bytes(), "arguments"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let envp = self
            .env
            .iter()
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                cstring(&pair, "environment")
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Prepared {
            exe,
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            home: cstring(self.home.as_bytes(), "home directory")?,
            groups: self
                .switch
                .as_ref()
                .map(|s| s.groups.clone())
                .unwrap_or_default(),
            stdio,
            terminal: leader == Leader::Terminal,
            umask: self.umask & 0o777,
            switch: self.switch.as_ref().map(|s| (s.uid, s.gid)),
        })
    }
}

/// The resources whose start-up limits sessions get.
const LIMITS: [nix::sys::resource::Resource; 16] = {
    use nix::sys::resource::Resource as R;
    [
        R::RLIMIT_AS,
        R::RLIMIT_CORE,
        R::RLIMIT_CPU,
        R::RLIMIT_DATA,
        R::RLIMIT_FSIZE,
        R::RLIMIT_LOCKS,
        R::RLIMIT_MEMLOCK,
        R::RLIMIT_MSGQUEUE,
        R::RLIMIT_NICE,
        R::RLIMIT_NOFILE,
        R::RLIMIT_NPROC,
        R::RLIMIT_RSS,
        R::RLIMIT_RTPRIO,
        R::RLIMIT_RTTIME,
        R::RLIMIT_SIGPENDING,
        R::RLIMIT_STACK,
    ]
};

/// Each resource's limits as the daemon had them before it changed any.
static STARTUP_LIMITS: std::sync::OnceLock<Vec<(libc::c_int, libc::rlimit)>> =
    std::sync::OnceLock::new();

/// Records the process's resource limits as sessions should get them (the daemon's own
/// core-dump limit of 0 stays the daemon's). Called once, first thing, before the daemon
/// lowers any of its own; later calls change nothing.
pub fn remember_limits() {
    STARTUP_LIMITS.get_or_init(|| {
        LIMITS
            .iter()
            .filter_map(|&resource| {
                let (soft, hard) = nix::sys::resource::getrlimit(resource).ok()?;
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                Some((resource as libc::c_int, limit))
            })
            .collect()
    });
}

fn startup_limits() -> &'static [(libc::c_int, libc::rlimit)] {
    STARTUP_LIMITS.get().map_or(&[], Vec::as_slice)
}

/// A started program not yet handed to a session: killed and reaped if dropped.
struct Started {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.pidfd.is_some() {
            kill_and_reap_blocking(self.pid);
        }
    }
}

fn kill_and_reap_blocking(pid: libc::pid_t) {
    // SAFETY: our own unreaped child, so the pid is still its.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    vfork::reap(pid);
}

/// A spawn and where its outcome goes.
struct Job {
    prepared: Prepared,
    reply: tokio::sync::oneshot::Sender<std::io::Result<Started>>,
}

/// The thread that starts session programs (see the module doc). Started on the first spawn.
pub struct Spawner {
    /// Taken by the thread when it starts.
    slots: std::sync::Mutex<Option<Slots>>,
    jobs: std::sync::OnceLock<mpsc::Sender<Job>>,
}

/// Three descriptor numbers reserved, while the daemon has few open, for the stdio of the
/// program being started (`/dev/null` in between), so the child's own table need copy no
/// more of the daemon's than the numbers below them (`vfork.rs`). Reserved, they are never
/// handed to anything else.
struct Slots {
    null: OwnedFd,
    fds: [OwnedFd; 3],
}

impl Slots {
    fn reserve() -> std::io::Result<Self> {
        let open = || -> std::io::Result<OwnedFd> {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            // Above stderr, whatever a daemon started with closed stdio has there.
            let fd = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
            // SAFETY: a new descriptor that nothing else owns.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
        };
        Ok(Self {
            null: open()?,
            fds: [open()?, open()?, open()?],
        })
    }

    /// Puts `fds` (or `/dev/null`) in the slots.
    fn fill(&self, fds: [libc::c_int; 3]) -> std::io::Result<()> {
        for (slot, fd) in self.fds.iter().zip(fds) {
            // SAFETY: both descriptors are open; the slot is ours alone.
            if unsafe { libc::dup3(fd, slot.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Default for Spawner {
    fn default() -> Self {
        Self::new()
    }
}

impl Spawner {
    /// A spawner with its descriptor slots reserved now (call it early, while the daemon
    /// holds few descriptors).
    pub fn new() -> Self {
        let slots = Slots::reserve()
            .map_err(|e| warn!(error = %e, "cannot reserve the session spawner's descriptors"))
            .ok();
        Self {
            slots: std::sync::Mutex::new(slots),
            jobs: std::sync::OnceLock::new(),
        }
    }

    /// Starts `launch`'s program led as `leader` with `stdio` (the child's ends, closed here
    /// once it has them).
    pub async fn spawn(
        &self,
        launch: &Launch,
        leader: Leader,
        stdio: [OwnedFd; 3],
    ) -> std::io::Result<SessionChild> {
        let prepared = launch.prepare(leader, stdio)?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let gone = || std::io::Error::other("the session spawner thread is gone");
        self.jobs
            .get_or_init(|| start_thread(super::lock(&self.slots).take()))
            .send(Job { prepared, reply })
            .map_err(|_| gone())?;
        let mut started = outcome.await.map_err(|_| gone())??;
        let pidfd = started.pidfd.take().ok_or_else(gone)?;
        let pid = started.pid;
        // SAFETY: an OwnedFd, open and the same descriptor for as long as the AsyncFd owns it.
        match unsafe { AsyncFd::register(pidfd) } {
            Ok(pidfd) => Ok(SessionChild {
                pid,
                pidfd: Some(pidfd),
            }),
            Err(e) => {
                kill_and_reap_blocking(pid);
                Err(std::io::Error::from(e))
            }
        }
    }
}

/// The spawner thread. If it cannot start, every spawn fails with an error (the receiving end
/// went with the closure).
fn start_thread(slots: Option<Slots>) -> mpsc::Sender<Job> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("session-spawner".into())
        .spawn(move || {
            let Some(slots) = slots else {
                return;
            };
            // The clone's child runs on this (64 KiB is far more than its few calls need).
            let mut stack = vec![0u8; 64 * 1024];
            for Job { prepared, reply } in queue {
                let outcome = start(&prepared, &slots, &mut stack);
                // Closes the child's ends of its stdio: it has its own copies now.
                drop(prepared);
                // A program whose session went meanwhile is killed as `Started` drops.
                let _ = reply.send(outcome);
            }
        });
    if let Err(e) = started {
        warn!(error = %e, "cannot start the session spawner thread");
    }
    jobs
}

/// One clone, on the spawner thread; then a pidfd to wait on.
fn start(p: &Prepared, slots: &Slots, stack: &mut [u8]) -> std::io::Result<Started> {
    slots.fill([
        p.stdio[0].as_raw_fd(),
        p.stdio[1].as_raw_fd(),
        p.stdio[2].as_raw_fd(),
    ])?;
    let started = start_filled(p, slots, stack);
    // The slots let go of the child's stdio (it has its own copies, or failed).
    let null = slots.null.as_raw_fd();
    slots.fill([null, null, null])?;
    started
}

fn start_filled(p: &Prepared, slots: &Slots, stack: &mut [u8]) -> std::io::Result<Started> {
    let (uid, gid) = p.switch.unwrap_or((0, 0));
    let stdio = slots.fds.each_ref().map(AsRawFd::as_raw_fd);
    let limits = startup_limits();
    let mut plan = vfork::Plan {
        exe: p.exe.as_ptr(),
        argv: p.argv_ptrs.as_ptr(),
        envp: p.envp_ptrs.as_ptr(),
        stdio,
        keep_below: stdio.iter().max().map_or(3, |fd| fd + 1),
        terminal: p.terminal,
        limits: limits.as_ptr(),
        limits_len: limits.len(),
        umask: p.umask,
        switch: p.switch.is_some(),
        uid,
        gid,
        groups: p.groups.as_ptr(),
        groups_len: p.groups.len(),
        home: p.home.as_ptr(),
        daemon: nix::unistd::getpid().as_raw(),
        failed: None,
    };
    // SAFETY: `plan` points into `p`, alive and unchanged for the call; `stack` is this
    // thread's own; this thread lives as long as the daemon.
    let pid = unsafe { vfork::clone_vfork(&mut plan, stack)? };
    let mut started = Started { pid, pidfd: None };
    // SAFETY: pidfd_open on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_NONBLOCK) };
    let fd = match libc::c_int::try_from(fd) {
        Ok(fd) if fd >= 0 => fd,
        _ => {
            let error = std::io::Error::last_os_error();
            kill_and_reap_blocking(pid);
            return Err(error);
        }
    };
    // SAFETY: a new descriptor that nothing else owns.
    started.pidfd = Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
    Ok(started)
}

/// A session's running program: its pid (a session leader, so also its process group and
/// session id), waited for through its pidfd; killed (and reaped) if dropped unwaited.
pub struct SessionChild {
    pid: libc::pid_t,
    /// None once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl SessionChild {
    /// The program's pid.
    pub fn id(&self) -> u32 {
        u32::try_from(self.pid).unwrap_or(0)
    }

    /// Waits for the program to end and reaps it. Cancel-safe; after it returned, returns the
    /// same status again.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            let Some(pidfd) = &self.pidfd else {
                return Err(std::io::Error::other("the program was already reaped"));
            };
            let mut ready = pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: our own child, not yet reaped (its pidfd is still held).
            let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if reaped == self.pid {
                self.pidfd = None;
                return Ok(ExitStatus::from_raw(status));
            }
            if reaped < 0 {
                return Err(std::io::Error::last_os_error());
            }
            ready.clear_ready();
        }
    }
}

impl Drop for SessionChild {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let pid = self.pid;
        // SAFETY: our own unreaped child, so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let reap = async move {
            let _ = pidfd.readable().await;
            let mut status = 0;
            // SAFETY: as above; it has exited now.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reap)),
            Err(_) => vfork::reap(pid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(exe: &str, args: &[&str]) -> Launch {
        Launch {
            exe: exe.into(),
            argv0: exe.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("ONLY".into(), "this".into())],
            home: "/".into(),
            switch: None,
            umask: 0o027,
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[tokio::test]
    async fn runs_the_program_with_its_stdio_env_and_nothing_else() {
        let spawner = Spawner::new();
        let script = "umask; pwd; env; ls /proc/self/fd; exit 3";
        let (stdin, _) = pipe();
        let (out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let mut child = spawner
            .spawn(
                &launch("/bin/sh", &["-c", script]),
                Leader::Session,
                [stdin, out_w, err_w],
            )
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            child.wait().await.unwrap_err().kind(),
            std::io::ErrorKind::Other
        );
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "0027", "{out}");
        assert_eq!(lines[1], "/", "{out}");
        // Only the environment it was given (sh adds PWD and its own few).
        assert!(lines.contains(&"ONLY=this"), "{out}");
        assert!(!out.contains("CARGO"), "{out}");
        // 0, 1, 2 and the directory ls reads: nothing of this process's.
        let fds: Vec<&str> = lines[lines.len() - 4..].to_vec();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error_naming_the_step() {
        let spawner = Spawner::new();
        let (a, b, c) = (pipe().0, pipe().1, pipe().1);
        let Err(error) = spawner
            .spawn(
                &launch("/nonexistent/shell", &[]),
                Leader::Session,
                [a, b, c],
            )
            .await
        else {
            panic!("started a program that does not exist");
        };
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        assert!(
            error.to_string().starts_with("cannot run the program: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_child_dropped_unwaited_is_killed() {
        let spawner = Spawner::new();
        let (a, b, c) = (pipe().0, pipe().1, pipe().1);
        let child = spawner
            .spawn(&launch("/bin/sleep", &["300"]), Leader::Session, [a, b, c])
            .await
            .unwrap();
        let pid = child.id();
        drop(child);
        for _ in 0..200 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{pid} still runs (or was not reaped)");
    }
}
