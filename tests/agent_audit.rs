//! A signature that cannot be audited is not handed out: while another writer holds the
//! database's write lock (so the `key.sign` event cannot be committed), a signature by a key
//! forwarded with `ssh -A` is refused and the login it was for fails; once the lock is gone,
//! the same login works and its signature is audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::client_agent::ClientAgent;
use common::sshd::Sshd;
use common::{Http, OsAccount, Sandbox, keyport_user};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_forwarded_signature_that_cannot_be_audited_is_refused() {
    if !keyport::testing::needs_root("OS accounts and an sshd that lets them in") {
        return;
    }
    let sb = Sandbox::new();
    sb.client_key("id_ed25519");
    let daemon = sb.serve_public(&[]);
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let account = OsAccount::create("kpau");
    let (login, api) = keyport_user(&sb, &daemon, &admin, "aud", &account);
    let sshd = Sshd::start(&sb, &account.name);
    sshd.trust(&account);

    // The client's own agent, with the only key the sshd accepts.
    let client_agent = ClientAgent::start(&sb, "forwarded");
    let agent_sock = client_agent.sock.clone();
    let client_line = client_agent.public_line.clone();
    sshd.authorize(&[client_line.trim()]);
    let signed = || {
        let r = api.get("audit");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "key.sign" && e["detail"]["key_source"] == "forwarded")
            .count()
    };

    // A session with -A that waits for the go, then logs in to the sshd with the forwarded key.
    let script = format!(
        "echo started; read go; ssh -o BatchMode=yes -p {} {}@127.0.0.1 echo signed; \
         echo \"exit=$?\"; read again; ssh -o BatchMode=yes -p {} {}@127.0.0.1 echo signed-again",
        sshd.port, account.name, sshd.port, account.name
    );
    let mut session = Killed(
        daemon
            .ssh("aud", &login)
            .arg("-A")
            .arg(&script)
            .env("SSH_AUTH_SOCK", &agent_sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = session.0.stdin.take().unwrap();
    let mut out = BufReader::new(session.0.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "started");

    // Another writer takes the database's write lock: no audit event can be committed.
    let blocker = rusqlite::Connection::open(sb.db()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let before = std::time::Instant::now();
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    let first = out.next().unwrap().unwrap();
    assert_eq!(
        first, "exit=255",
        "the login signed without an audit: {first}"
    );
    assert!(before.elapsed() < Duration::from_secs(60));
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert_eq!(signed(), 0, "a refused signature was audited");

    // With the lock gone, the same login works, and its signature is on record.
    std::io::Write::write_all(&mut stdin, b"again\n").unwrap();
    assert_eq!(out.next().unwrap().unwrap(), "signed-again");
    assert!(signed() >= 1, "the signature was not audited");
}
