//! The processes a daemon started, found through `/proc`: for tests that stop, measure or
//! inspect a session's programs.

/// Every process below `ancestor`, with its command line (NULs as spaces).
pub fn below(ancestor: u32) -> Vec<(u32, String)> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mut p = pid;
        while let Some(up) = parent(p) {
            if up == ancestor {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push((pid, cmdline));
                break;
            }
            if up <= 1 {
                break;
            }
            p = up;
        }
    }
    found
}

/// The pids below `ancestor` whose command line contains `needle`.
pub fn named(ancestor: u32, needle: &str) -> Vec<u32> {
    below(ancestor)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(needle))
        .map(|(pid, _)| pid)
        .collect()
}

/// Bytes `pid` has written so far (`wchar` in `/proc/PID/io`); 0 once it is gone.
pub fn bytes_written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `value` until it has not changed for `quiet` (at most 20 s); returns it.
pub fn settled(mut value: impl FnMut() -> u64, quiet: std::time::Duration) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = value();
    let mut since = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = value();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still changing after 20 s"
        );
    }
}

/// Waits (up to 20 s) until no shell start-up work runs below `ancestor`: a session killed
/// while its shell runs `pyenv rehash` (from root's `.bashrc` on some machines) leaves
/// pyenv's lock behind, and every later shell then waits 60 s for it.
pub fn shells_settled(ancestor: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while below(ancestor).iter().any(|(_, cmd)| cmd.contains("pyenv")) {
        assert!(
            std::time::Instant::now() < deadline,
            "shell start-up still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A child process (an `ssh` client left running) killed and reaped when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pid`'s resident memory, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Polls `done` every 20 ms until it holds; fails the test if that takes longer than
/// `within`.
pub fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `cmd` with `input` on its stdin (written from a thread, so a command that writes
/// before it reads cannot deadlock; then end of file), collecting its output.
pub fn output_with_input(
    cmd: &mut std::process::Command,
    input: std::sync::Arc<Vec<u8>>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
