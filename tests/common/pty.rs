//! A terminal for tests: Python's pty module plays it for an `ssh -tt`, resizing it mid-way
//! so the client sends a window change.

use std::process::Command;

use super::require_tool;

/// Python's pty module plays the terminal for `argv` (an `ssh -tt … 'stty size; echo
/// first; sleep 1; stty size; echo done'`): 30x100 at start, then 40x120 and SIGWINCH, which
/// makes ssh send window-change. Returns what the terminal showed.
pub fn pty_sizes(argv: &[String]) -> String {
    require_tool("python3");
    let driver = r#"
import fcntl, json, os, pty, select, signal, struct, sys, termios, time
argv = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
out = b""
def read_for(seconds, until=None):
    global out
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            out += data
            if until and until in out:
                return
read_for(15, b"first")
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
os.kill(pid, signal.SIGWINCH)
read_for(15, b"done")
sys.stdout.write(out.decode(errors="replace"))
"#;
    let out = Command::new("python3")
        .args(["-c", driver, &serde_json::to_string(argv).unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}
