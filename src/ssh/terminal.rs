//! A session's pseudo-terminal, as sshd sets it up: the client's terminal modes from
//! `pty-req` applied to the line discipline (RFC 4254 §8, with OpenSSH's additions such as
//! IUTF8), window changes, and `break` requests (RFC 4335) passed on as a line break.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::termios::{
    self, BaudRate, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg,
    SpecialCharacterIndices as Cc,
};
use russh::Pty;

/// The pty's master side, kept apart from the I/O halves: a resize or a break takes effect at
/// once, never behind queued input.
pub struct Terminal(OwnedFd);

impl Terminal {
    /// Controls the terminal whose master side is `master` (a duplicate of it).
    pub fn new(master: OwnedFd) -> Self {
        Self(master)
    }

    /// `window-change`.
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(&self.0, size);
    }

    /// `break`: as sshd, a line break of the system's length (`tcsendbreak(fd, 0)`); the
    /// requested length is advisory (RFC 4335 §3).
    pub fn send_break(&self) -> bool {
        termios::tcsendbreak(self.0.as_fd(), 0).is_ok()
    }
}

/// Applies the client's terminal modes to the terminal `pts`. Opcodes this system has no
/// equivalent for are skipped, as sshd skips them.
pub fn apply_modes(pts: impl AsFd, modes: &[(Pty, u32)]) -> std::io::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    let mut tio = termios::tcgetattr(pts.as_fd()).map_err(std::io::Error::from)?;
    for &(code, value) in modes {
        apply(&mut tio, code, value);
    }
    termios::tcsetattr(pts.as_fd(), SetArg::TCSANOW, &tio).map_err(std::io::Error::from)
}

fn apply(tio: &mut termios::Termios, code: Pty, value: u32) {
    let on = value != 0;
    if let Some(index) = special_character(code) {
        // 255 means "disabled" on the wire; Linux's _POSIX_VDISABLE is 0.
        let byte = u8::try_from(value).unwrap_or(0);
        tio.control_chars[index as usize] = if byte == 255 { 0 } else { byte };
    } else if let Some(flag) = input_flag(code) {
        tio.input_flags.set(flag, on);
    } else if let Some(flag) = local_flag(code) {
        tio.local_flags.set(flag, on);
    } else if let Some(flag) = output_flag(code) {
        tio.output_flags.set(flag, on);
    } else {
        match code {
            Pty::CS7 | Pty::CS8 if on => {
                tio.control_flags.remove(ControlFlags::CSIZE);
                let size = if code == Pty::CS7 {
                    ControlFlags::CS7
                } else {
                    ControlFlags::CS8
                };
                tio.control_flags.insert(size);
            }
            Pty::PARENB => tio.control_flags.set(ControlFlags::PARENB, on),
            Pty::PARODD => tio.control_flags.set(ControlFlags::PARODD, on),
            Pty::TTY_OP_ISPEED => {
                if let Some(rate) = baud_rate(value) {
                    let _ = termios::cfsetispeed(tio, rate);
                }
            }
            Pty::TTY_OP_OSPEED => {
                if let Some(rate) = baud_rate(value) {
                    let _ = termios::cfsetospeed(tio, rate);
                }
            }
            _ => {}
        }
    }
}

fn special_character(code: Pty) -> Option<Cc> {
    Some(match code {
        Pty::VINTR => Cc::VINTR,
        Pty::VQUIT => Cc::VQUIT,
        Pty::VERASE => Cc::VERASE,
        Pty::VKILL => Cc::VKILL,
        Pty::VEOF => Cc::VEOF,
        Pty::VEOL => Cc::VEOL,
        Pty::VEOL2 => Cc::VEOL2,
        Pty::VSTART => Cc::VSTART,
        Pty::VSTOP => Cc::VSTOP,
        Pty::VSUSP => Cc::VSUSP,
        Pty::VREPRINT => Cc::VREPRINT,
        Pty::VWERASE => Cc::VWERASE,
        Pty::VLNEXT => Cc::VLNEXT,
        Pty::VDISCARD => Cc::VDISCARD,
        _ => return None,
    })
}

fn input_flag(code: Pty) -> Option<InputFlags> {
    Some(match code {
        Pty::IGNPAR => InputFlags::IGNPAR,
        Pty::PARMRK => InputFlags::PARMRK,
        Pty::INPCK => InputFlags::INPCK,
        Pty::ISTRIP => InputFlags::ISTRIP,
        Pty::INLCR => InputFlags::INLCR,
        Pty::IGNCR => InputFlags::IGNCR,
        Pty::ICRNL => InputFlags::ICRNL,
        // Not in nix's set, but Linux has it (as sshd's ttymodes.h expects).
        Pty::IUCLC => InputFlags::from_bits_retain(nix::libc::IUCLC),
        Pty::IXON => InputFlags::IXON,
        Pty::IXANY => InputFlags::IXANY,
        Pty::IXOFF => InputFlags::IXOFF,
        Pty::IMAXBEL => InputFlags::IMAXBEL,
        Pty::IUTF8 => InputFlags::IUTF8,
        _ => return None,
    })
}

fn local_flag(code: Pty) -> Option<LocalFlags> {
    Some(match code {
        Pty::ISIG => LocalFlags::ISIG,
        Pty::ICANON => LocalFlags::ICANON,
        Pty::XCASE => LocalFlags::from_bits_retain(nix::libc::XCASE),
        Pty::ECHO => LocalFlags::ECHO,
        Pty::ECHOE => LocalFlags::ECHOE,
        Pty::ECHOK => LocalFlags::ECHOK,
        Pty::ECHONL => LocalFlags::ECHONL,
        Pty::NOFLSH => LocalFlags::NOFLSH,
        Pty::TOSTOP => LocalFlags::TOSTOP,
        Pty::IEXTEN => LocalFlags::IEXTEN,
        Pty::ECHOCTL => LocalFlags::ECHOCTL,
        Pty::ECHOKE => LocalFlags::ECHOKE,
        Pty::PENDIN => LocalFlags::PENDIN,
        _ => return None,
    })
}

fn output_flag(code: Pty) -> Option<OutputFlags> {
    Some(match code {
        Pty::OPOST => OutputFlags::OPOST,
        Pty::OLCUC => OutputFlags::OLCUC,
        Pty::ONLCR => OutputFlags::ONLCR,
        Pty::OCRNL => OutputFlags::OCRNL,
        Pty::ONOCR => OutputFlags::ONOCR,
        Pty::ONLRET => OutputFlags::ONLRET,
        _ => return None,
    })
}

/// The line speed the client's terminal has, in bits per second (OpenSSH sends the number).
fn baud_rate(bps: u32) -> Option<BaudRate> {
    Some(match bps {
        0 => BaudRate::B0,
        50 => BaudRate::B50,
        75 => BaudRate::B75,
        110 => BaudRate::B110,
        134 => BaudRate::B134,
        150 => BaudRate::B150,
        200 => BaudRate::B200,
        300 => BaudRate::B300,
        600 => BaudRate::B600,
        1200 => BaudRate::B1200,
        1800 => BaudRate::B1800,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        460_800 => BaudRate::B460800,
        921_600 => BaudRate::B921600,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_reach_the_line_discipline() {
        let pair = nix::pty::openpty(None, None).unwrap();
        let pts = pair.slave;
        apply_modes(
            &pts,
            &[
                (Pty::ECHO, 0),
                (Pty::VINTR, 1),
                (Pty::VERASE, 8),
                (Pty::VQUIT, 255),
                (Pty::IUTF8, 1),
                (Pty::ICRNL, 0),
                (Pty::TTY_OP_OSPEED, 9600),
            ],
        )
        .unwrap();
        let tio = termios::tcgetattr(&pts).unwrap();
        assert!(!tio.local_flags.contains(LocalFlags::ECHO));
        assert_eq!(tio.control_chars[Cc::VINTR as usize], 1);
        assert_eq!(tio.control_chars[Cc::VERASE as usize], 8);
        assert_eq!(tio.control_chars[Cc::VQUIT as usize], 0, "255 is disabled");
        assert!(tio.input_flags.contains(InputFlags::IUTF8));
        assert!(!tio.input_flags.contains(InputFlags::ICRNL));
        // (Character size and parity do not stick on Linux ptys: the driver keeps CS8.)
        assert_eq!(termios::cfgetospeed(&tio), BaudRate::B9600);
    }
}
