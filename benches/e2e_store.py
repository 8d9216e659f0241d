#!/usr/bin/python3
"""keyport on PostgreSQL against keyport on SQLite, side by side in one run: a session start on
an open connection (the session's secrets read, its use audited) and secret writes through the
API (create, then change), each daemon timed in alternation, with ratios PostgreSQL / SQLite.

    sudo E2E_KEYPORT=target/release/keyport python3 benches/e2e_store.py

PostgreSQL is Debian's package (/usr/lib/postgresql/*/bin, which scripts/test installs), a fresh
cluster in a temp dir owned by `nobody`, on a free loopback port, with its durable defaults
(fsync on, synchronous_commit on), as SQLite's synchronous = FULL. Both daemons run as root; the
sessions are keyport user `bench` on a fresh OS account (made here, removed at the end), with
the same 20 secrets.

Knobs: E2E_KEYPORT (target/release/keyport), E2E_STORE_SESSIONS (200 per daemon),
E2E_STORE_WRITES (200 per daemon), E2E_SECRETS (20), E2E_RESULTS (where the table is appended;
default: printed only).
"""

import glob
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

KEYPORT = os.path.abspath(os.environ.get("E2E_KEYPORT", "target/release/keyport"))
SESSIONS = int(os.environ.get("E2E_STORE_SESSIONS", "200"))
WRITES = int(os.environ.get("E2E_STORE_WRITES", "200"))
SECRETS = int(os.environ.get("E2E_SECRETS", "20"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(text):
    print(f"[store] {text}", flush=True)


class Postgres:
    def __init__(self, root):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not bins:
            raise SystemExit("PostgreSQL is not installed: run scripts/test --setup-only")
        self.bin = os.path.dirname(bins[-1])
        self.dir = os.path.join(root, "pg")
        os.makedirs(self.dir)
        nobody = pwd.getpwnam("nobody")
        os.chmod(root, 0o711)
        os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        with open(os.path.join(self.dir, "pw"), "w") as f:
            f.write("bench-pw\n")
        os.chown(os.path.join(self.dir, "pw"), nobody.pw_uid, nobody.pw_gid)
        self.as_nobody = ["runuser", "-u", "nobody", "--"]
        subprocess.run(
            self.as_nobody + [f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "postgres",
                              f"--pwfile={self.dir}/pw", "--auth-host=scram-sha-256",
                              "--auth-local=reject", "-E", "UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            self.as_nobody + [f"{self.bin}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port),
                              "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        self.url = f"postgres://postgres:bench-pw@127.0.0.1:{self.port}/postgres?sslmode=disable"
        deadline = time.monotonic() + 30
        while b"ready to accept connections" not in open(os.path.join(self.dir, "log"), "rb").read():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("postgres did not start")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Keyport:
    def __init__(self, root, name, database=None):
        self.name = name
        self.home = os.path.join(root, name, "home")
        self.data = os.path.join(root, name, "data")
        os.makedirs(os.path.join(self.home, ".ssh"))
        os.makedirs(os.path.join(self.home, ".config/keyport"))
        with open(os.path.join(self.home, ".config/keyport/keyport.toml"), "w") as f:
            f.write(f"[limits]\nmax_secrets = {SECRETS + WRITES}\n")
        self.key = os.path.join(self.home, ".ssh", "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key], check=True)
        self.env = {"PATH": os.environ["PATH"], "HOME": self.home, "KEYPORT_DATA_DIR": self.data,
                    "XDG_CONFIG_HOME": os.path.join(self.home, ".config"), "KEYPORT_LOG": "info",
                    "KEYPORT_CONFIG": os.path.join(self.home, ".config/keyport/keyport.toml")}  # fmt: skip
        if database:
            self.env["KEYPORT_DATABASE"] = database
        self.ssh_port, self.api_port = free_port(), free_port()
        self.out = open(os.path.join(root, name, "log"), "w")
        self.proc = subprocess.Popen(
            [KEYPORT, "serve", "--ssh-listen", f"127.0.0.1:{self.ssh_port}",
             "--api-listen", f"127.0.0.1:{self.api_port}"],
            env=self.env, stdout=self.out, stderr=self.out,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "keyport ready" not in open(os.path.join(root, name, "log")).read():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.05)
        with open(os.path.join(self.home, ".config/keyport/cli.toml")) as f:
            self.token = next(l.split('"')[1] for l in f if l.startswith("token"))
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.ctl = os.path.join(root, name, "ctl")

    def as_bench(self, account):
        """Sessions and secrets from now on are keyport user `bench`'s, on OS `account`."""
        with open(self.key + ".pub") as f:
            line = f.read().strip()
        self.api("POST", "users", {"name": "bench", "os_user": account, "login_keys": [line]})
        self.user = "bench"
        out = subprocess.run([KEYPORT, "token", "create", "bench", "--user", "bench"], env=self.env,
                             check=True, capture_output=True, text=True)  # fmt: skip
        self.token = out.stdout.strip().split()[-1]
        self.master = subprocess.Popen(self.ssh_args("-M", "-N"))
        while not os.path.exists(self.ctl):
            time.sleep(0.05)

    def ssh_args(self, *extra):
        return ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i", self.key,
                "-S", self.ctl, "-p", str(self.ssh_port), *extra, f"{self.user}@127.0.0.1"]  # fmt: skip

    def api(self, method, path, body):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v1/{path}", method=method,
            data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {self.token}",
                                                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req) as r:
                return r.status
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.name}: {method} {path}: {e.code} {e.read().decode()}") from None

    def session(self):
        started = time.perf_counter()
        subprocess.run(self.ssh_args() + ["true"], check=True)
        return (time.perf_counter() - started) * 1000

    def write(self, i, change):
        started = time.perf_counter()
        if change:
            self.api("PATCH", f"users/{self.user}/secrets/w{i}", {"value": f"changed-{i}"})
        else:
            self.api("POST", f"users/{self.user}/secrets", {"name": f"w{i}", "value": f"v{i}", "env": f"W_{i}"})
        return (time.perf_counter() - started) * 1000

    def stop(self):
        if hasattr(self, "master"):
            self.master.terminate()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def alternate(daemons, runs, measure):
    """`runs` measurements per daemon, in alternation; the p50 in ms of each."""
    times = {d.name: [] for d in daemons}
    for i in range(runs):
        for d in daemons if i % 2 == 0 else reversed(daemons):
            times[d.name].append(measure(d, i))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    if not os.path.exists(KEYPORT):
        raise SystemExit(f"no keyport binary at {KEYPORT}: build it (cargo build --release) or set E2E_KEYPORT")
    root = tempfile.mkdtemp(prefix="kp-store-", dir=os.environ.get("E2E_TMP", "/var/tmp"))
    pg = Postgres(root)
    account = f"kpstore{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", account], check=True)
    subprocess.run(["usermod", "-p", "*", account], check=True)
    daemons = []
    try:
        daemons = [Keyport(root, "sqlite"), Keyport(root, "postgres", pg.url)]
        for d in daemons:
            d.as_bench(account)
            for i in range(SECRETS):
                d.api("POST", f"users/{d.user}/secrets", {"name": f"s{i}", "value": f"value-{i}", "env": f"S_{i}"})
            d.session()
        rows = []
        s = alternate(daemons, SESSIONS, lambda d, i: d.session())
        rows.append((f"session on an open connection ({SECRETS} secrets), p50 ms", s))
        c = alternate(daemons, WRITES, lambda d, i: d.write(i, change=False))
        rows.append(("secret create through the API, p50 ms", c))
        p = alternate(daemons, WRITES, lambda d, i: d.write(i, change=True))
        rows.append(("secret change (PATCH of the value) through the API, p50 ms", p))
        table = ["| measure | SQLite | PostgreSQL | PostgreSQL / SQLite |", "|---|---|---|---|"]
        for what, r in rows:
            table.append(f"| {what} | {r['sqlite']:.2f} | {r['postgres']:.2f} | {r['postgres'] / r['sqlite']:.2f}× |")
        text = "\n".join(table)
        print(text)
        if os.environ.get("E2E_RESULTS"):
            with open(os.environ["E2E_RESULTS"], "a") as f:
                f.write(text + "\n")
    finally:
        for d in daemons:
            d.stop()
        pg.stop()
        subprocess.run(["userdel", "-r", account], stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
