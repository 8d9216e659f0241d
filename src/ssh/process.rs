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

/// What the session's program drops to before exec (`spawn.rs`), and file work for the
/// user takes on (`run_as`).
#[derive(Debug, Clone)]
pub struct Switch {
    pub(super) uid: nix::libc::uid_t,
    pub(super) gid: nix::libc::gid_t,
    pub(super) groups: Vec<nix::libc::gid_t>,
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
    // initgroups(3) reads the group database: do it here, not in the cloned child.
    let groups = nix::unistd::getgrouplist(&name, gid)?
        .into_iter()
        .map(nix::unistd::Gid::as_raw)
        .collect();
    let switch = Switch {
        uid: os.uid,
        gid: os.gid,
        groups,
    };
    Ok(Identity {
        os,
        switch: Some(switch),
    })
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
