//! Limits and abuse resistance (issue 12), against the real binary on loopback, floods bounded
//! in count and time: the pre-authentication gate under thousands of idle, stalled and
//! slowloris connections at a 1,024-descriptor limit; per-connection caps; wrong-key floods
//! throttled and audited as a handful of rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Http, Sandbox, me, require_tool, ssh_daemon};
use serde_json::{Value, json};

fn probe(daemon: &Daemon, key: &Path, case: &str, arg: &str) -> Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/probe.py"))
        .args([case, &daemon.ssh_port.to_string(), &me().name])
        .arg(key)
        .arg(arg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe {case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_eleventh_session_channel_on_a_connection_is_refused() {
    require_tool("python3");
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let answer = probe(&daemon, &key, "max-sessions", "11");
    assert_eq!(
        answer,
        json!({"opened": 10, "refused": 1, "still_up": true})
    );
}

#[test]
fn env_requests_past_the_byte_cap_are_refused_and_not_kept() {
    require_tool("python3");
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    // 64 × 200 KiB: none fits the 64 KiB per channel.
    let answer = probe(&daemon, &key, "env-flood", &(200 * 1024).to_string());
    assert_eq!(
        answer,
        json!({"accepted": 0, "refused": 64, "exec": "success", "in_env": "0"})
    );
    // 64 × 30 KiB: the first two fit.
    let answer = probe(&daemon, &key, "env-flood", &(30 * 1024).to_string());
    assert_eq!(
        answer,
        json!({"accepted": 2, "refused": 62, "exec": "success", "in_env": "2"})
    );
}

#[test]
fn a_wrong_key_flood_with_new_names_is_throttled_and_audited_in_a_few_rows() {
    require_tool("python3");
    // The connection rate is opened up: what turns the flood away here is its failures.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[ssh]\nper_source_rate = 100000\n").unwrap();
    let (sb, daemon, key, api) = ssh_daemon(&[("KEYPORT_CONFIG", config.path().to_str().unwrap())]);
    let wrong = sb.client_key("wrong");
    let answer = probe(&daemon, &wrong, "wrong-keys", "1000");
    eprintln!("wrong-key flood: {answer}");
    let turned_away = answer["turned_away"].as_u64().unwrap();
    let failed = answer["failed"].as_u64().unwrap();
    assert_eq!(turned_away + failed, 1000, "{answer}");
    // Past 100 failures from the address (whatever the names), it is turned away before any
    // key exchange.
    // Blocked at 100 failures; a connection or two may be accepted while the 100th is still
    // being counted (it is counted when the connection has ended).
    assert!((100..=105).contains(&failed), "{answer}");
    assert!(daemon.log().contains("turned away: too many failed logins"));
    let rows = api.audit_rows("ssh.login-failed");
    assert!(rows.len() <= 3, "{} rows: {rows:?}", rows.len());
    assert_eq!(rows[0]["detail"]["source"], "127.0.0.2");
    // Another address (the real user's) is not affected.
    let out = daemon
        .ssh(&me().name, &key)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rest of the window's failures arrive as one row with their count when it flushes
    // (here: at shutdown).
    daemon.stop();
    let vault = sb.vault();
    let events = vault.audit_events(None, 0).unwrap();
    let flushed: u64 = events
        .iter()
        .filter(|e| e.action == "ssh.login-failed")
        .filter_map(|e| e.detail["failures"].as_u64())
        .sum();
    assert_eq!(flushed, failed, "every failure counted once");
}

/// The daemon's open descriptors and resident memory (KiB).
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (fds, common::procs::rss_kib(pid))
}

/// The daemon's TCP sockets, counted by local port and state (for the failure message).
fn sockets_by_port(pid: u32) -> std::collections::BTreeMap<(u16, String), usize> {
    use std::os::unix::fs::MetadataExt;
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let text = link.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let _ = std::fs::metadata("/").map(|m| m.ino());
    let mut counts = std::collections::BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = f[9].parse().unwrap_or(0);
            if inodes.contains(&inode) {
                let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap();
                *counts.entry((port, f[3].to_string())).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// CPU the process used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A daemon limited to 1,024 descriptors, with a short grace time for the test.
fn daemon_at_1024_fds(sb: &Sandbox, config: &Path) -> Daemon {
    let mut cmd = sb.keyport();
    // SAFETY: one async-signal-safe syscall before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let limit = nix::libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    sb.serve_command(cmd, &[("KEYPORT_CONFIG", config.to_str().unwrap())])
}

fn raise_own_fd_limit() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(hard >= 8192, "the test needs 8192 descriptors, has {hard}");
}

#[test]
fn floods_of_idle_stalled_and_slowloris_connections_lock_nobody_out() {
    require_tool("ssh");
    raise_own_fd_limit();
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let config: PathBuf = sb.dir.path().join("keyport.toml");
    // Short grace and header times, so the test sees them pass.
    std::fs::write(
        &config,
        "[ssh]\nlogin_grace_secs = 5\n[http]\nheader_timeout_secs = 5\n",
    )
    .unwrap();
    let daemon = daemon_at_1024_fds(&sb, &config);
    let pid = daemon.pid();
    let api_addr = daemon.url.trim_start_matches("http://").to_string();
    let ssh_addr = format!("127.0.0.1:{}", daemon.ssh_port);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = footprint(pid);

    let mut held: Vec<TcpStream> = Vec::new();
    // The flood comes from another address than the real user (one address is throttled as
    // a whole: a flood from yours would hold you back too, as under sshd).
    let connect = |addr: &str| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        let from: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
        socket.bind(&from.into()).ok()?;
        let to: std::net::SocketAddr = addr.parse().unwrap();
        socket.connect(&to.into()).ok()?;
        Some(TcpStream::from(socket))
    };
    // 2,000 that send nothing.
    held.extend((0..2000).filter_map(|_| connect(&ssh_addr)));
    // 200 stalled mid key exchange: banner sent, the server's KEXINIT never answered.
    for _ in 0..200 {
        if let Some(mut s) = connect(&ssh_addr) {
            let _ = s.write_all(b"SSH-2.0-stalled\r\n");
            held.push(s);
        }
    }
    // 2,000 slowloris HTTP requests: headers never finished.
    for _ in 0..2000 {
        if let Some(mut s) = connect(&api_addr) {
            let _ = s.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            held.push(s);
        }
    }
    let flooded = footprint(pid);

    // A real login and a real API call still get through, promptly.
    let started = Instant::now();
    let out = daemon
        .ssh(&me().name, &key)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ssh_took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let list = sb
        .keyport()
        .args(["secret", "list"])
        .env("KEYPORT_URL", &daemon.url)
        .output()
        .unwrap();
    let api_took = started.elapsed();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    eprintln!(
        "baseline {baseline:?}, flooded {flooded:?}; ssh took {ssh_took:?}, secret list {api_took:?}"
    );
    assert!(ssh_took < Duration::from_secs(2), "ssh took {ssh_took:?}");
    assert!(
        api_took < Duration::from_secs(2),
        "secret list took {api_took:?}"
    );

    // Holding the flood costs no CPU to speak of.
    let ticks = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = (cpu_ticks(pid) - ticks) as f64 / 100.0 / 3.0;
    assert!(
        used < 0.20,
        "the daemon used {:.0}% of a core",
        used * 100.0
    );

    // Past the grace (and header) time no silent connection is held.
    let deadline = Instant::now() + Duration::from_secs(15);
    let fds = loop {
        let (fds, _) = footprint(pid);
        if fds <= baseline.0 + 30 || Instant::now() > deadline {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "after the grace time: {fds} descriptors: {:?} (ssh {ssh_addr}, api {api_addr})",
        sockets_by_port(pid)
    );
    assert!(
        fds <= baseline.0 + 30,
        "{fds} descriptors held after the grace time (baseline {})",
        baseline.0
    );
    drop(held);
    std::thread::sleep(Duration::from_secs(1));
    let after = footprint(pid);
    eprintln!("after: {after:?}");
    assert!(
        after.0 <= baseline.0 + 10,
        "descriptors {after:?} vs {baseline:?}"
    );
    assert!(
        after.1 <= baseline.1 + 40 * 1024,
        "RSS {after:?} vs {baseline:?}"
    );

    // From 200 addresses at once (10 each): the whole pool of unauthenticated connections is
    // what bounds them — never more than `full` (64) held — and the grace time ends them.
    let ssh_port = daemon.ssh_port;
    let mut spread = Vec::new();
    for host in 10..210u16 {
        let from: std::net::SocketAddr = format!("127.0.0.{host}:0").parse().unwrap();
        for _ in 0..10 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&from.into()).unwrap();
            let to: std::net::SocketAddr = ssh_addr.parse().unwrap();
            if socket.connect(&to.into()).is_ok() {
                spread.push(TcpStream::from(socket));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let held: usize = sockets_by_port(pid)
        .iter()
        .filter(|((port, state), _)| *port == ssh_port && state == "01")
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "{} connections from 200 addresses: {held} held",
        spread.len()
    );
    assert!(
        (10..=64).contains(&held),
        "{held} unauthenticated connections held"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while footprint(pid).0 > baseline.0 + 5 {
        assert!(
            Instant::now() < deadline,
            "still held after the grace time: {:?}",
            sockets_by_port(pid)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(spread);
}

#[test]
fn the_audit_log_comes_in_pages_and_the_cli_follows_them() {
    let (sb, daemon, _key, api) = ssh_daemon(&[]);
    // 10,000 events, written straight into the database (a fixture: events hold no values).
    let mut db = rusqlite::Connection::open(sb.db()).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = db.transaction().unwrap();
    for n in 0..10_000 {
        tx.execute(
            "INSERT INTO audit_events (at, actor, user_name, action, detail)
             VALUES (?1, 'system', ?2, 'test.event', ?3)",
            rusqlite::params![n, me().name, format!("{{\"n\":{n}}}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let total: usize = db
        .query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert!(total >= 10_000);

    // limit=100 pages, each following the last id, until a short page.
    let (mut seen, mut after, mut pages) = (Vec::new(), 0i64, 0);
    loop {
        let r = api.get(&format!("audit?limit=100&after={after}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json().as_array().unwrap().clone();
        assert!(page.len() <= 100);
        pages += 1;
        seen.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
        if page.len() < 100 {
            break;
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(seen.len(), total, "every event, once");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats"
    );
    assert!(pages >= 100);
    // Unpaged, a response is one page at most.
    assert_eq!(api.get("audit").json().as_array().unwrap().len(), 1000);
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x"] {
        let r = api.get(&format!("audit?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    // The CLI prints them all.
    let out = sb
        .keyport()
        .args(["audit", "-o", "json"])
        .env("KEYPORT_URL", &daemon.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let test_events = printed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "test.event")
        .count();
    assert_eq!(test_events, 10_000);
}

#[test]
fn a_signature_flood_from_one_session_is_limited_and_every_refusal_counted() {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let config = sb.dir.path().join("keyport.toml");
    std::fs::write(&config, "[ssh]\nagent_signatures_per_minute = 50\n").unwrap();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", config.to_str().unwrap())]);
    let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    // 80 signatures through the session's agent, as fast as ssh-keygen makes them.
    let script = "cd \"$(mktemp -d)\" && echo data > f && ok=0 && no=0 && \
                  for i in $(seq 80); do \
                    if ssh-keygen -q -Y sign -f \"$KEYPORT_SESSION_DIR/id.pub\" -n test f 2>/dev/null; \
                    then ok=$((ok+1)); rm -f f.sig; else no=$((no+1)); fi; \
                  done; echo \"$ok $no\"";
    let out = daemon
        .ssh(&me().name, &key)
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> = stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (signed, refused) = (counts[0], counts[1]);
    eprintln!("signed {signed}, refused {refused}");
    assert_eq!(signed + refused, 80, "{stdout}");
    // The bucket holds 50 and refills at 50 a minute: a few more may come in meanwhile.
    assert!((50..=55).contains(&signed), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (rows, refused_rows) = loop {
        let audit = api.get("audit").json();
        let events = audit.as_array().unwrap();
        let signs = events.iter().filter(|e| e["action"] == "key.sign").count();
        let refusals: Vec<Value> = events
            .iter()
            .filter(|e| e["action"] == "key.sign-refused")
            .cloned()
            .collect();
        if !refusals.is_empty() || Instant::now() > deadline {
            break (signs, refusals);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rows as u64, signed, "every signature made is audited");
    assert_eq!(refused_rows.len(), 1, "one row for the session's refusals");
    assert_eq!(refused_rows[0]["detail"]["refused"], refused);
    let metrics = Http::new(&daemon.url, None).get("metrics").body;
    assert_eq!(
        common::metric(&metrics, "keyport_agent_signatures_refused_total"),
        refused as f64
    );
}

/// ssh-audit's report on the server at `port`: (its failures, the connection rate its DHEat
/// test reached, if it reported one).
fn ssh_audit(port: u16) -> (Vec<String>, Option<f64>) {
    let out = Command::new("ssh-audit")
        .args(["-j", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ssh-audit: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut failures = Vec::new();
    for kind in ["kex", "key", "enc", "mac"] {
        for alg in report[kind].as_array().into_iter().flatten() {
            if alg["notes"]["fail"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                failures.push(format!(
                    "{kind} {}: {}",
                    alg["algorithm"], alg["notes"]["fail"]
                ));
            }
        }
    }
    for cve in report["cves"].as_array().into_iter().flatten() {
        failures.push(format!("cve {cve}"));
    }
    let rate = report["additional_notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|n| n.contains("DHEat"))
        .and_then(|n| {
            let before = n.split(" conns/sec").next()?;
            before.rsplit(' ').next()?.parse::<f64>().ok()
        });
    (failures, rate)
}

#[test]
fn ssh_audit_finds_no_failure_and_a_dheat_rate_near_sshds() {
    if !keyport::testing::needs_root("a real sshd to compare with") {
        return;
    }
    require_tool("ssh-audit");
    let (sb, daemon, _key, _api) = ssh_daemon(&[]);
    let sshd = common::sshd::Sshd::start(&sb, &me().name);
    let (failures, keyport_rate) = ssh_audit(daemon.ssh_port);
    let (_, sshd_rate) = ssh_audit(sshd.port);
    eprintln!("DHEat rate: keyport {keyport_rate:?}, sshd {sshd_rate:?} conns/sec");
    assert!(failures.is_empty(), "ssh-audit failures: {failures:#?}");
    // ssh-audit reports a rate only above its safe 20/s; below that, 20 bounds it.
    let (keyport_rate, sshd_rate) = (keyport_rate.unwrap_or(20.0), sshd_rate.unwrap_or(20.0));
    assert!(
        keyport_rate <= 2.0 * sshd_rate,
        "keyport let {keyport_rate} conns/sec through, sshd {sshd_rate}"
    );
}

#[test]
fn window_changes_without_a_pty_cost_no_memory() {
    require_tool("python3");
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let rss = || footprint(daemon.pid()).1;
    let _ = probe(&daemon, &key, "window-changes", "1000");
    let before = rss();
    let answer = probe(&daemon, &key, "window-changes", "50000");
    let after = rss();
    eprintln!("RSS {before} KiB before 50,000 window changes, {after} KiB after");
    assert_eq!(answer, json!({"stdout": "got done\n", "status": 0}));
    assert!(after <= before + 2 * 1024, "{before} KiB -> {after} KiB");
}
