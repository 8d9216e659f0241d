//! The processes sessions run: as whom (a root daemon switches to the user's OS account,
//! with its supplementary groups; otherwise the daemon's own account), with which argv (the
//! login shell runs the command, in HOME), and how signals reach them.

use std::ffi::{CString, OsString};
use std::path::PathBuf;

use nix::sys::signal::Signal;
use russh::Sig;

use crate::osuser::{self, OsUser, OsUserError};

/// Where Debian's OpenSSH keeps its sftp server.
pub const SFTP_SERVERS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
];

/// The system's `sftp-server`, if installed.
pub fn sftp_server() -> Option<PathBuf> {
    SFTP_SERVERS.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// What a session channel runs.
#[derive(Debug, Clone)]
pub enum Program {
    /// A login shell (`shell` request).
    Shell,
    /// `$SHELL -c COMMAND` (`exec` request).
    Exec(Vec<u8>),
    /// The sftp server (`subsystem sftp`).
    Sftp,
}

/// Who a session's processes run as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The account.
    pub os: OsUser,
    /// Switch to it in the child (the daemon runs as root and it is another account).
    pub switch: Option<Switch>,
}

/// What the child drops to before exec.
#[derive(Debug, Clone)]
pub struct Switch {
    uid: nix::libc::uid_t,
    gid: nix::libc::gid_t,
    groups: Vec<nix::libc::gid_t>,
    home: CString,
}

/// The account `os_user`'s sessions run as: that account when the daemon is root, else the
/// daemon's own (a non-root daemon is a single-user workspace).
pub fn identity(os_user: &str) -> Result<Identity, OsUserError> {
    if !osuser::is_root() {
        return Ok(Identity {
            os: osuser::current()?,
            switch: None,
        });
    }
    let os = osuser::lookup(os_user)?;
    let name =
        CString::new(os.name.clone()).map_err(|_| OsUserError::NoSuchUser(os.name.clone()))?;
    let gid = nix::unistd::Gid::from_raw(os.gid);
    // initgroups(3) reads the group database: do it here, not in the forked child.
    let groups = nix::unistd::getgrouplist(&name, gid)?
        .into_iter()
        .map(nix::unistd::Gid::as_raw)
        .collect();
    let home =
        CString::new(os.home.clone()).map_err(|_| OsUserError::NoSuchUser(os.name.clone()))?;
    let switch = Switch {
        uid: os.uid,
        gid: os.gid,
        groups,
        home,
    };
    Ok(Identity {
        os,
        switch: Some(switch),
    })
}

impl Switch {
    /// In the forked child, before exec: supplementary groups, group, user, and only then the
    /// user's home as working directory (entered with the user's rights; `/` if it cannot be,
    /// as sshd does). Only async-signal-safe syscalls on data prepared before the fork.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on memory owned by `self`; no allocation after fork.
        unsafe {
            if nix::libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
                || nix::libc::setgid(self.gid) != 0
                || nix::libc::setuid(self.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::chdir(self.home.as_ptr()) != 0 {
                nix::libc::chdir(c"/".as_ptr());
            }
        }
        Ok(())
    }
}

/// How a channel's program is started, the same for pipes and a pty.
pub struct Launch {
    pub exe: std::path::PathBuf,
    pub argv0: std::ffi::OsString,
    pub args: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub home: String,
    pub switch: Option<Switch>,
    pub umask: u32,
}

impl Launch {
    /// What `identity` runs for `program`, with `env` and the session umask.
    pub fn new(
        identity: &Identity,
        program: &Program,
        env: crate::secrets::env::SessionEnv,
        umask: u32,
    ) -> Self {
        let (argv0, args) = argv(&login_shell(&identity.os), program);
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

    /// The work done in the forked child before exec: no inherited descriptors, a session of
    /// its own (`new_session`; a pty's spawner makes one itself), sshd's umask and the
    /// daemon's start-up limits, the user's identity and home, then death with the daemon.
    ///
    /// The parent-death signal fires when the *thread* that forked exits, not the process:
    /// programs are spawned from the channel task, on a tokio worker thread, which lives as
    /// long as the runtime. Never spawn them from `spawn_blocking` (those threads end when
    /// idle).
    pub fn pre_exec(
        &self,
        new_session: bool,
    ) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let switch = self.switch.clone();
        let hygiene = Hygiene::new(self.umask, new_session);
        move || {
            close_inherited_fds();
            hygiene.before_switch()?;
            if let Some(switch) = &switch {
                switch.apply()?;
            }
            hygiene.after_switch()
        }
    }
}

/// What every session process starts with, whatever state the daemon itself is in: a session
/// of its own (so no way to the daemon's controlling terminal), the configured umask, the
/// resource limits the daemon had at start-up (the daemon's own core-dump limit of 0 stays the
/// daemon's), and death with the daemon (a `kill -9` of it leaves no session running with the
/// user's secrets). Prepared before the fork: [`Hygiene::before_switch`] and
/// [`Hygiene::after_switch`] only make async-signal-safe syscalls on this copy.
#[derive(Debug, Clone, Copy)]
pub struct Hygiene {
    new_session: bool,
    umask: nix::libc::mode_t,
    limits: Limits,
    daemon: nix::libc::pid_t,
}

/// The daemon's resource limits as they were before it changed any.
type Limits = [Option<(ResourceId, nix::libc::rlimit)>; LIMITS.len()];

#[cfg(target_env = "gnu")]
type ResourceId = nix::libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type ResourceId = nix::libc::c_int;

/// Every resource a session's limits are restored for.
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

static STARTUP_LIMITS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

/// Records the process's resource limits as sessions should get them. Called once, first
/// thing, before the daemon lowers any of its own; later calls change nothing.
pub fn remember_limits() {
    STARTUP_LIMITS.get_or_init(|| {
        let mut limits: Limits = [None; LIMITS.len()];
        for (slot, resource) in limits.iter_mut().zip(LIMITS) {
            if let Ok((soft, hard)) = nix::sys::resource::getrlimit(resource) {
                let limit = nix::libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                *slot = Some((resource as ResourceId, limit));
            }
        }
        limits
    });
}

impl Hygiene {
    /// For a program that gets a session of its own here (`new_session`), or from the pty
    /// spawner (which makes it a session leader with the terminal as its controlling one).
    pub fn new(umask: u32, new_session: bool) -> Self {
        Self {
            new_session,
            umask: umask & 0o777,
            limits: STARTUP_LIMITS
                .get()
                .copied()
                .unwrap_or([None; LIMITS.len()]),
            daemon: nix::unistd::getpid().as_raw(),
        }
    }

    /// In the forked child, while it still has the daemon's rights.
    pub fn before_switch(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on values copied into `self` before the fork.
        unsafe {
            if self.new_session && nix::libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (resource, limit) in self.limits.iter().flatten() {
                // A limit the daemon could not restore (it lowered its own hard limit) is left
                // as it is: the program still starts.
                nix::libc::setrlimit(*resource, limit);
            }
            nix::libc::umask(self.umask);
        }
        Ok(())
    }

    /// In the forked child, after the identity switch (which clears the parent-death signal):
    /// die with the daemon, and at once if it is already gone.
    pub fn after_switch(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls with integer arguments.
        unsafe {
            let kill = nix::libc::c_ulong::try_from(nix::libc::SIGKILL).unwrap_or(9);
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, kill) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::getppid() != self.daemon {
                nix::libc::_exit(1);
            }
        }
        Ok(())
    }
}

/// In the forked child: marks every descriptor above stderr close-on-exec, so nothing another
/// thread opened without `O_CLOEXEC` (a pty master, for a moment) reaches the program. Another
/// user's terminal must never leak into this session.
pub fn close_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 4;
    // SAFETY: a syscall with integer arguments; async-signal-safe.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

impl Switch {
    /// Runs `f` on a new thread whose filesystem identity is the user's: fsuid, fsgid and
    /// supplementary groups are per-thread credentials on Linux (the raw syscalls, unlike
    /// glibc's wrappers, change only the calling thread), and leaving fsuid 0 drops the
    /// capabilities that bypass file permissions. Every file `f` opens, creates, renames or
    /// removes is checked against the user's rights, as if the user did it. The thread ends
    /// with `f`, so no other work ever runs with these credentials.
    pub fn run_as<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let switch = self.clone();
        std::thread::spawn(move || {
            // SAFETY: raw credential syscalls on this thread only, on memory owned by `switch`.
            unsafe {
                let groups = nix::libc::syscall(
                    nix::libc::SYS_setgroups,
                    switch.groups.len(),
                    switch.groups.as_ptr(),
                );
                nix::libc::syscall(nix::libc::SYS_setfsgid, switch.gid);
                nix::libc::syscall(nix::libc::SYS_setfsuid, switch.uid);
                // setfs*id report no errors: asking again returns the value now in force.
                let fsuid = nix::libc::syscall(nix::libc::SYS_setfsuid, switch.uid);
                let fsgid = nix::libc::syscall(nix::libc::SYS_setfsgid, switch.gid);
                if groups != 0 || fsuid != i64::from(switch.uid) || fsgid != i64::from(switch.gid) {
                    return Err(std::io::Error::other(
                        "cannot take on the user's file identity",
                    ));
                }
                // And no capability at all on this thread (they are per-thread too): nothing it
                // does can reach beyond what the user could.
                drop_all_capabilities()?;
            }
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("file identity thread failed"))?
    }
}

/// Clears the calling thread's capability sets (effective, permitted, inheritable).
///
/// # Safety
/// Only the calling thread is affected; callers run this on a thread that ends with the work.
unsafe fn drop_all_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset reads one header and two data structs, all valid for the call.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// argv0 and arguments for `program` run by `shell`.
pub fn argv(shell: &str, program: &Program) -> (OsString, Vec<OsString>) {
    use std::os::unix::ffi::OsStringExt;
    match program {
        Program::Shell => {
            // A leading '-' in argv[0] makes it a login shell, as sshd does.
            let base = shell.rsplit('/').next().unwrap_or(shell);
            (OsString::from(format!("-{base}")), Vec::new())
        }
        Program::Exec(command) => (
            OsString::from(shell),
            vec![OsString::from("-c"), OsString::from_vec(command.clone())],
        ),
        Program::Sftp => (OsString::from("sftp-server"), Vec::new()),
    }
}

/// The program to run: the user's shell, or the sftp server.
pub fn executable(identity: &Identity, program: &Program) -> PathBuf {
    match program {
        Program::Sftp => {
            sftp_server().unwrap_or_else(|| PathBuf::from("/usr/lib/openssh/sftp-server"))
        }
        _ => PathBuf::from(login_shell(&identity.os)),
    }
}

/// The account's shell, or `/bin/sh` when it has none.
pub fn login_shell(os: &OsUser) -> String {
    if os.shell.is_empty() {
        "/bin/sh".into()
    } else {
        os.shell.clone()
    }
}

/// A default PATH, sshd-like.
pub fn default_path(root: bool) -> &'static str {
    if root {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    }
}

/// The Unix signal an SSH `signal` request names (RFC 4254 §6.9).
pub fn to_signal(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => Signal::SIGUSR2,
            "CONT" => Signal::SIGCONT,
            "STOP" => Signal::SIGSTOP,
            "TSTP" => Signal::SIGTSTP,
            "WINCH" => Signal::SIGWINCH,
            _ => return None,
        },
    })
}

/// The SSH name of the signal that ended a process (RFC 4254 §6.10).
pub fn from_signal(signal: i32) -> Sig {
    match Signal::try_from(signal) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(other) => Sig::Custom(other.as_str().trim_start_matches("SIG").to_string()),
        Err(_) => Sig::Custom(format!("{signal}")),
    }
}

/// Sends `signal` to the process group `pgid` (the session's process and its children).
/// Callers only signal a group whose leader they have not yet reaped, so the id cannot have
/// been reused; 0 (which would mean the daemon's own group) is refused.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(pid @ 1..) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        for sig in [Sig::INT, Sig::TERM, Sig::KILL, Sig::HUP, Sig::USR1] {
            let unix = to_signal(&sig).unwrap();
            assert_eq!(
                format!("{:?}", from_signal(unix as i32)),
                format!("{sig:?}")
            );
        }
        assert_eq!(
            format!("{:?}", from_signal(Signal::SIGUSR2 as i32)),
            "Custom(\"USR2\")"
        );
        assert_eq!(to_signal(&Sig::Custom("NOPE".into())), None);
    }

    #[test]
    fn run_as_takes_the_users_file_identity_and_no_capabilities() {
        if !crate::testing::needs_root("switching identity") {
            return;
        }
        let identity = identity("nobody").unwrap();
        let nobody = identity.os.uid;
        let status = identity
            .switch
            .unwrap()
            .run_as(|| std::fs::read_to_string("/proc/thread-self/status").unwrap())
            .unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(field("Uid:")[3], nobody.to_string(), "fsuid: {status}");
        assert_eq!(field("CapEff:")[0], "0000000000000000", "{status}");
        assert_eq!(field("CapPrm:")[0], "0000000000000000", "{status}");
        // The daemon's own thread is untouched.
        let mine = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(
            !mine.lines().any(|l| l == "CapEff:\t0000000000000000"),
            "{mine}"
        );
    }

    #[test]
    fn login_shell_argv0_and_exec() {
        let (argv0, args) = argv("/bin/bash", &Program::Shell);
        assert_eq!(argv0, "-bash");
        assert!(args.is_empty());
        let (argv0, args) = argv("/bin/bash", &Program::Exec(b"echo hi".to_vec()));
        assert_eq!(argv0, "/bin/bash");
        assert_eq!(args, ["-c", "echo hi"]);
    }
}
