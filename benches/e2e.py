#!/usr/bin/env python3
"""keyport against OpenSSH's sshd, side by side in one run, with the same OpenSSH client.

Run through `benches/e2e.sh`, which installs what is missing and builds keyport in release
first. This script starts both daemons on free loopback ports in a private temp dir, measures,
prints a markdown table and writes it to benches/RESULTS.md, then stops everything it started.

Knobs (environment): E2E_LATENCY_RUNS (50), E2E_TRANSFER (1G, as `head -c` reads it),
E2E_TRANSFER_REPS (2), E2E_PARALLEL (16), E2E_PARALLEL_SECONDS (10), E2E_IDLE_SESSIONS (1000, on each daemon),
E2E_IDLE_SESSIONS_KEYPORT (10000, on keyport alone; 0: skip),
E2E_SECRETS (100), E2E_GIT_RUNS (10), E2E_MICRO (a file with `cargo bench` output to include),
E2E_SLOW_READER (100000000, bytes into a program that starts reading after 3 s),
E2E_KEEP (1: keep the temp dir), E2E_KEYPORT (another keyport binary, e.g. to compare a change),
E2E_RELAY_TRANSFER (200M, bytes each way in the relay step), E2E_MASK_TRANSFER (200M, the text
a pty session prints in the mask step), E2E_MASK_SECRETS (10, masked values in it),
E2E_STEPS (a comma-separated subset of: latency, session_start, sources (OpenBao references;
its knobs in e2e_sources.py), git_clone, throughput, slow_reader, relay, mask,
sessions_per_second, idle_sessions, after_idle), E2E_RESULTS (where
the report goes; by default benches/RESULTS.md, or target/keyport-e2e-partial.md when E2E_STEPS
or E2E_KEYPORT is set).
"""

import json
import os
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

import e2e_report  # benches/, the script's own directory
import e2e_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYPORT = os.environ.get("E2E_KEYPORT") or os.path.join(ROOT, "target", "release", "keyport")
SSHD = "/usr/sbin/sshd"
# A partial run (some steps, another binary) does not replace the full results.
PARTIAL = bool(os.environ.get("E2E_STEPS") or os.environ.get("E2E_KEYPORT"))
RESULTS = os.environ.get("E2E_RESULTS") or os.path.join(
    ROOT, "target" if PARTIAL else "benches", "keyport-e2e-partial.md" if PARTIAL else "RESULTS.md"
)

LATENCY_RUNS = int(os.environ.get("E2E_LATENCY_RUNS", "50"))
TRANSFER = os.environ.get("E2E_TRANSFER", "1G")
TRANSFER_REPS = int(os.environ.get("E2E_TRANSFER_REPS", "2"))
PARALLEL = int(os.environ.get("E2E_PARALLEL", "16"))
PARALLEL_SECONDS = float(os.environ.get("E2E_PARALLEL_SECONDS", "10"))
IDLE_SESSIONS = int(os.environ.get("E2E_IDLE_SESSIONS", "1000"))
# keyport alone: as many sshd connections would be 20,000 sshd processes (about 36 GB of PSS).
IDLE_SESSIONS_KEYPORT = int(os.environ.get("E2E_IDLE_SESSIONS_KEYPORT", "10000"))
IDLE_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle_client.py")
SECRETS = int(os.environ.get("E2E_SECRETS", "100"))
GIT_RUNS = int(os.environ.get("E2E_GIT_RUNS", "10"))
SLOW_READER = os.environ.get("E2E_SLOW_READER", "100000000")
RELAY_TRANSFER = os.environ.get("E2E_RELAY_TRANSFER", "200M")
MASK_TRANSFER = os.environ.get("E2E_MASK_TRANSFER", "200M")
MASK_SECRETS = int(os.environ.get("E2E_MASK_SECRETS", "10"))
KEX = "curve25519-sha256"
# aes256-gcm is not asked for by the issue; it is the AES-GCM that keyport offers by default.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
# The client's cipher on its leg in the relay step (keyport picks the upstream leg's own).
RELAY_CIPHERS = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"]

STARTED = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(args, **kw):
    """Runs a command, failing loudly with its output."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    out = subprocess.run(args, capture_output=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(map(str, args))} exited {out.returncode}:\n"
            f"{out.stdout.decode(errors='replace')}{out.stderr.decode(errors='replace')}"
        )
    return out.stdout.decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transfer_bytes(size):
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    m = re.fullmatch(r"(\d+)([KMG]?)", size)
    if not m:
        sys.exit(f"E2E_TRANSFER={size}: use a number with an optional K, M or G")
    return int(m.group(1)) * units[m.group(2)]


def cpu_seconds(pid):
    """utime + stime of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- processes


def proc_table():
    """pid -> (ppid, exe) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        table[int(entry)] = (ppid, exe)
    return table


def descendants(root, table):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory_kib(pid):
    """(RSS, PSS) of one process in KiB."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Daemon:
    """A daemon process and the SSH endpoint it serves."""

    def __init__(self, name, proc, port, user, key):
        self.name, self.proc, self.port, self.user, self.key = name, proc, port, user, key

    def ssh(self, *remote, key=None, user=None, extra=(), log_level="ERROR"):
        return [
            "ssh", "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"LogLevel={log_level}",
            "-o", f"KexAlgorithms={KEX}",
            "-i", key or self.key, "-p", str(self.port), *extra,
            f"{user or self.user}@127.0.0.1", *remote,
        ]  # fmt: skip

    def memory(self):
        """(processes, RSS sum, PSS sum) in KiB: the daemon and every process of the same
        executable under it (sshd forks per connection; keyport is one process)."""
        exe = os.readlink(f"/proc/{self.proc.pid}/exe")
        table = proc_table()
        pids = [p for p in descendants(self.proc.pid, table) if table.get(p, (0, ""))[1] == exe]
        rss = pss = 0
        for pid in pids:
            r, p = memory_kib(pid)
            rss, pss = rss + r, pss + p
        return len(pids), rss, pss


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="keyport-e2e.")
        os.chmod(self.work, 0o755)
        self.env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        self.procs = []
        self.account_created = False
        self.results = {}
        self.notes = []

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    # ---- set-up

    def keygen(self, path, comment):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
        with open(path + ".pub") as f:
            return f.read().strip()

    def kp_env(self, **extra):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.path("kphome"),
            "XDG_CONFIG_HOME": self.path("kphome", ".config"),
            "KEYPORT_DATA_DIR": self.path("kpdata"),
            "KEYPORT_CONFIG": self.path("keyport.toml"),
        }
        env.update(extra)
        return env

    def keyport_cli(self, *args, **extra):
        return run([KEYPORT, *args], env=self.kp_env(**extra))

    def create_account(self):
        """The OS account both daemons run sessions as: fresh, with `/bin/sh` as its shell and
        an empty home in the temp dir, so no shell start-up file (root's `.bashrc` may run
        anything) is part of what is measured. Removed at the end."""
        self.os_user = f"kpbench{os.getpid() % 100000}"
        self.home = self.path("home")
        # Password `*`: none, but not locked (`!`), which sshd without PAM would refuse.
        run(["useradd", "-M", "-d", self.home, "-s", "/bin/sh", "-p", "*", self.os_user])
        self.account_created = True
        pw = run(["getent", "passwd", self.os_user]).split(":")
        self.uid, self.gid = int(pw[2]), int(pw[3])
        os.makedirs(self.home, mode=0o700)
        os.chown(self.home, self.uid, self.gid)
        os.makedirs(self.path("keys"), mode=0o700)
        self.client_key = self.path("keys", "client")
        self.client_pub = self.keygen(self.client_key, "e2e-client")

    def start_keyport(self):
        # The bootstrap admin (this OS user, root) gets a key of its own; the measured
        # sessions log in as keyport users that run as the bench account.
        os.makedirs(self.path("kphome", ".ssh"), mode=0o700)
        self.keygen(self.path("kphome", ".ssh", "id_ed25519"), "e2e-admin")
        with open(self.path("keyport.toml"), "w") as f:
            # As sshd below (MaxStartups 3000:100:3000, no penalties): 16 parallel clients and
            # 1,000 sessions opened 50 at a time are never dropped for arriving together.
            f.write(
                "# generated by benches/e2e.py: every setting at its default but the limits\n"
                "# that would drop the bench's own bursts (sshd gets the same)\n"
                "[ssh]\n"
                'max_startups = "3000:100:3000"\n'
                "per_source_startups = 3000\n"
                "per_source_rate = 100000\n"
                "max_connections_per_user = 20000\n"
            )
        port, api = free_port(), free_port()
        logf = open(self.path("keyport.log"), "wb")
        proc = subprocess.Popen(
            [KEYPORT, "serve", "--ssh-listen", f"127.0.0.1:{port}", "--api-listen", f"127.0.0.1:{api}"],
            env=self.kp_env(), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)

        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"keyport exited:\n{self.read('keyport.log')}")
            return "keyport ready" in self.read("keyport.log")

        wait_for("keyport to start", ready)
        self.api_url = f"http://127.0.0.1:{api}"
        # `bench0`: no secrets; its sessions are the ones compared with sshd's.
        self.keyport_cli("user", "add", "bench0", "--os-user", self.os_user, "--login-key", self.client_pub)
        self.keyport = Daemon("keyport", proc, port, "bench0", self.client_key)
        log(f"keyport pid {proc.pid} on 127.0.0.1:{port}, sessions as {self.os_user}")

    def start_sshd(self):
        d = self.path("sshd")
        os.makedirs(d)
        os.makedirs("/run/sshd", exist_ok=True)
        self.keygen(os.path.join(d, "host_ed25519"), "sshd-host")
        # bench0's keyport key may log in too: that is what the git row uses.
        user_key = self.keyport_cli("key", "show", "--user", "bench0").splitlines()[0].strip()
        with open(os.path.join(d, "authorized_keys"), "w") as f:
            f.write(f"{self.client_pub}\n{user_key}\n")
        port = free_port()
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {d}/host_ed25519",
            f"AuthorizedKeysFile {d}/authorized_keys",
            "StrictModes no",
            "UsePAM no",
            "PidFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "AcceptEnv LANG LC_* COLORTERM",
            # What keyport sends a workspace's sshd in the relay step (else it reports the
            # refused names on every relayed session's stderr).
            "AcceptEnv KEYPORT_*",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
            # 16 parallel clients and 1,000 sessions opened 50 at a time: never drop a
            # connection for being unauthenticated at the same time as others.
            "MaxStartups 3000:100:3000",
            # OpenSSH >= 9.8 penalises addresses with many short connections; dropped below
            # when this sshd does not know the keyword.
            "PerSourcePenalties no",
        ]
        config = os.path.join(d, "sshd_config")
        for _ in range(2):
            with open(config, "w") as f:
                f.write("\n".join(lines) + "\n")
            check = subprocess.run([SSHD, "-t", "-f", config], capture_output=True)
            if check.returncode == 0:
                break
            lines = [l for l in lines if not l.startswith("PerSourcePenalties")]
        else:
            raise RuntimeError(f"sshd -t: {check.stderr.decode()}")
        logf = open(self.path("sshd.log"), "wb")
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", config],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)
        self.sshd = Daemon("sshd", proc, port, self.os_user, self.client_key)

        def answers():
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited:\n{self.read('sshd.log')}")
            return subprocess.run(self.sshd.ssh("true"), env=self.env, capture_output=True).returncode == 0

        wait_for("sshd to answer", answers)
        log(f"sshd pid {proc.pid} on 127.0.0.1:{port}")

    def read(self, name):
        try:
            with open(self.path(name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.account_created:
            subprocess.run(["userdel", self.os_user], capture_output=True)
        if os.environ.get("E2E_KEEP") == "1":
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- measurements

    def time_ssh(self, args):
        t0 = time.perf_counter()
        out = subprocess.run(args, env=self.env, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)}: exit {out.returncode}: {out.stderr.decode()}")
        return elapsed * 1000

    def latency(self):
        """`ssh HOST true`, the two daemons interleaved so drift hits both alike."""
        times = {"keyport": [], "sshd": []}
        for d in (self.keyport, self.sshd):  # warm-up (page cache, first-session work)
            for _ in range(3):
                self.time_ssh(d.ssh("true"))
        for _ in range(LATENCY_RUNS):
            for d in (self.keyport, self.sshd):
                times[d.name].append(self.time_ssh(d.ssh("true")))
        for name, t in times.items():
            self.results[f"lat50.{name}"] = statistics.median(t)
            self.results[f"lat95.{name}"] = percentile(t, 95)
            log(f"latency {name}: p50 {statistics.median(t):.1f} ms, p95 {percentile(t, 95):.1f} ms")

    def throughput(self):
        size = transfer_bytes(TRANSFER)
        for cipher in CIPHERS:
            for direction in ("up", "down"):
                for d in (self.keyport, self.sshd):
                    rates = []
                    probe = subprocess.run(d.ssh("true", extra=("-c", cipher), log_level="INFO"), env=self.env, capture_output=True)
                    for _ in range(TRANSFER_REPS if b"no matching cipher" not in probe.stderr else 0):
                        if direction == "up":
                            ssh = shlex.join(d.ssh("cat > /dev/null", extra=("-c", cipher)))
                            cmd = f"head -c {TRANSFER} /dev/zero | {ssh}"
                        else:
                            ssh = shlex.join(d.ssh(f"head -c {TRANSFER} /dev/zero", extra=("-c", cipher)))
                            cmd = f"{ssh} | wc -c"
                        t0 = time.perf_counter()
                        out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=self.env, capture_output=True)
                        elapsed = time.perf_counter() - t0
                        if out.returncode != 0:
                            raise RuntimeError(f"{cmd}: {out.stderr.decode()}")
                        if direction == "down" and int(out.stdout) != size:
                            raise RuntimeError(f"{cmd}: got {out.stdout.decode().strip()} bytes")
                        rates.append(size / elapsed / 1e6)
                    if not rates:
                        note = f"{d.name} does not offer {cipher}: its row is empty."
                        if note not in self.notes:
                            self.notes.append(note)
                        log(note)
                        continue
                    self.results[f"{direction}.{cipher}.{d.name}"] = max(rates)
                    log(f"{direction} {cipher} {d.name}: {', '.join(f'{r:.0f}' for r in rates)} MB/s")

    def slow_reader(self):
        """`head -c N /dev/urandom | ssh HOST 'sleep 3; wc -c'`: bytes the program never got."""
        size = transfer_bytes(SLOW_READER)
        for d in (self.keyport, self.sshd):
            ssh = shlex.join(d.ssh("sleep 3; wc -c"))
            cmd = f"head -c {SLOW_READER} /dev/urandom | {ssh}"
            out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=self.env, capture_output=True)
            got = int(out.stdout) if out.stdout.strip().isdigit() else 0
            self.results[f"lost.{d.name}"] = size - got
            log(f"slow reader {d.name}: {got} of {size} bytes (exit {out.returncode})")

    def relay(self):
        """Relay mode: keyport user `bench0` through workspace `bench` (the sshd above, its
        host key pinned, bench0's keyport key in its authorized_keys, sessions as the bench
        account) against the same client straight to that sshd. `ssh true` latency and bulk
        throughput both ways, the two interleaved; the rows are relayed ÷ direct."""
        with open(self.path("sshd", "host_ed25519.pub")) as f:
            host_key = f.read().strip()
        self.keyport_cli(
            "workspace", "add", "bench", "--address", f"127.0.0.1:{self.sshd.port}",
            "--os-user", self.os_user, "--owner", "bench0", "--host-key", host_key,
        )  # fmt: skip
        relayed = Daemon("relayed", self.keyport.proc, self.keyport.port, "bench0:bench", self.client_key)
        direct = Daemon("direct", self.sshd.proc, self.sshd.port, self.os_user, self.client_key)
        # Relayed for real: it runs as the workspace login, with nothing to report.
        out = subprocess.run(relayed.ssh('id -un; echo "$KEYPORT_WORKSPACE"'), env=self.env, stdin=subprocess.DEVNULL, capture_output=True)
        if out.returncode != 0 or out.stdout.decode().split() != [self.os_user, "bench"]:
            raise RuntimeError(f"relayed session: exit {out.returncode}: {out.stdout.decode()}{out.stderr.decode()}")
        if out.stderr:
            self.notes.append(f"relayed sessions printed on stderr: {out.stderr.decode().strip()}")
        times = {"relayed": [], "direct": []}
        for d in (relayed, direct):
            for _ in range(3):
                self.time_ssh(d.ssh("true"))
        for _ in range(LATENCY_RUNS):
            for d in (relayed, direct):
                times[d.name].append(self.time_ssh(d.ssh("true")))
        for name, t in times.items():
            self.results[f"relay.lat50.{name}"] = statistics.median(t)
            self.results[f"relay.lat95.{name}"] = percentile(t, 95)
            log(f"relay latency {name}: p50 {statistics.median(t):.1f} ms, p95 {percentile(t, 95):.1f} ms")
        size = transfer_bytes(RELAY_TRANSFER)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu_seconds(pid):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

        def machine_busy():
            # All CPUs' busy and total jiffies (/proc/stat's first line): idle + iowait are idle.
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v) - v[3] - v[4], sum(v)

        busy = wall = 0.0
        machine = {"relayed": [0, 0], "direct": [0, 0]}
        for cipher in RELAY_CIPHERS:
            for direction in ("up", "down"):
                rates = {"relayed": [], "direct": []}
                for _ in range(TRANSFER_REPS):
                    for d in (relayed, direct):
                        if direction == "up":
                            ssh = shlex.join(d.ssh("cat > /dev/null", extra=("-c", cipher)))
                            cmd = f"head -c {RELAY_TRANSFER} /dev/zero | {ssh}"
                        else:
                            ssh = shlex.join(d.ssh(f"head -c {RELAY_TRANSFER} /dev/zero", extra=("-c", cipher)))
                            cmd = f"{ssh} | wc -c"
                        cpu0, t0 = cpu_seconds(self.keyport.proc.pid), time.perf_counter()
                        m0 = machine_busy()
                        out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=self.env, capture_output=True)
                        elapsed = time.perf_counter() - t0
                        m1 = machine_busy()
                        machine[d.name][0] += m1[0] - m0[0]
                        machine[d.name][1] += m1[1] - m0[1]
                        if d is relayed:
                            busy += cpu_seconds(self.keyport.proc.pid) - cpu0
                            wall += elapsed
                        if out.returncode != 0:
                            raise RuntimeError(f"{cmd}: {out.stderr.decode()}")
                        if direction == "down" and int(out.stdout) != size:
                            raise RuntimeError(f"{cmd}: got {out.stdout.decode().strip()} bytes")
                        rates[d.name].append(size / elapsed / 1e6)
                for name, r in rates.items():
                    self.results[f"relay.{direction}.{cipher}.{name}"] = max(r)
                    log(f"relay {direction} {cipher} {name}: {', '.join(f'{x:.0f}' for x in r)} MB/s")
        # Both legs' crypto in one process: how much of a core keyport took while relaying.
        self.results["relay.cpu"] = 100 * busy / wall
        # Whether the machine itself was the limit: client, keyport and sshd share its cores.
        for name, (b, total) in machine.items():
            self.results[f"relay.machine.{name}"] = 100 * b / max(total, 1)
            log(f"machine busy during {name} transfers: {100 * b / max(total, 1):.0f}% of all cores")
        log(f"keyport CPU during relayed transfers: {100 * busy / wall:.0f}% of one core")

    def mask(self):
        """pty output with masking on and off: keyport users `benchmask` (MASK_SECRETS token
        secrets, masked by default) and `benchnomask` (the same secrets with `"mask": false`),
        the same OS account, env and session otherwise; `ssh -tt HOST 'cat FILE' | wc -c` of a
        MASK_TRANSFER text file (this README repeated, one of the values every 64 KiB),
        interleaved, best of TRANSFER_REPS. The row is on ÷ off; keyport's CPU is read too."""
        size = transfer_bytes(MASK_TRANSFER)
        # Values as real ones start (their first letters are common in text), 40 bytes each.
        starts = ["ghp_", "npm_", "sk-", "xoxb-", "AKIA", "glpat-", "pass", "hf_", "dop_v1_", "sq0"]
        values = [(starts[i % len(starts)] + os.urandom(20).hex())[:40] for i in range(MASK_SECRETS)]
        with open(os.path.join(ROOT, "README.md"), "rb") as f:
            text = f.read()
        path = self.path("mask.txt")
        with open(path, "wb") as f:
            written = i = 0
            while written < size:
                piece = (text * (1 + 65536 // len(text)))[:65536 - 41] + values[i % len(values)].encode() + b"\n"
                piece = piece[: size - written]
                f.write(piece)
                written, i = written + len(piece), i + 1
        os.chmod(path, 0o644)
        cases = {}
        for name, user, mask in (("on", "benchmask", None), ("off", "benchnomask", False)):
            key = self.path("keys", user)
            pub = self.keygen(key, user)
            self.keyport_cli("user", "add", user, "--os-user", self.os_user, "--login-key", pub)
            token = self.keyport_cli("token", "create", "e2e", "--user", user).strip().splitlines()[-1].strip()
            entries = [
                {"name": f"mask-{i}", "value": v, "env": f"E2E_MASK_{i}", "kind": "token",
                 **({} if mask is None else {"mask": mask})}
                for i, v in enumerate(values)
            ]  # fmt: skip
            with open(self.path(f"{user}.json"), "w") as f:
                json.dump(entries, f)
            self.keyport_cli("secret", "import", self.path(f"{user}.json"), KEYPORT_URL=self.api_url, KEYPORT_TOKEN=token)
            cases[name] = (key, user)
        # Masking is really on for one and off for the other.
        for name, (key, user) in cases.items():
            out = run(self.keyport.ssh('printf "[%s]" "$E2E_MASK_0"', key=key, user=user, extra=("-tt",)))
            want = "[***]" if name == "on" else f"[{values[0]}]"
            if out != want:
                raise RuntimeError(f"masking {name}: a pty session printed {out!r}, not {want!r}")
        rates = {"on": [], "off": []}
        cpu = {"on": [0.0, 0.0], "off": [0.0, 0.0]}
        for _ in range(TRANSFER_REPS):
            for name, (key, user) in cases.items():
                ssh = shlex.join(self.keyport.ssh(f"cat {path}", key=key, user=user, extra=("-tt",)))
                cmd = f"{ssh} | wc -c"
                cpu0, t0 = cpu_seconds(self.keyport.proc.pid), time.perf_counter()
                out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=self.env, stdin=subprocess.DEVNULL, capture_output=True)
                elapsed = time.perf_counter() - t0
                cpu[name][0] += cpu_seconds(self.keyport.proc.pid) - cpu0
                cpu[name][1] += elapsed
                if out.returncode != 0:
                    raise RuntimeError(f"{cmd}: {out.stderr.decode()}")
                got = int(out.stdout)
                # The pty turns each \n into \r\n; masked values come out as ***.
                if got < size * 0.9:
                    raise RuntimeError(f"{cmd}: only {got} of {size} bytes")
                rates[name].append(size / elapsed / 1e6)
                self.results[f"mask.bytes.{name}"] = got
        for name, r in rates.items():
            self.results[f"mask.{name}"] = max(r)
            self.results[f"mask.cpu.{name}"] = 100 * cpu[name][0] / cpu[name][1]
            log(f"pty output, masking {name}: {', '.join(f'{x:.0f}' for x in r)} MB/s, "
                f"keyport {100 * cpu[name][0] / cpu[name][1]:.0f}% of a core")  # fmt: skip

    def sessions_per_second(self):
        for d in (self.keyport, self.sshd):
            done, failed = [0] * PARALLEL, [0] * PARALLEL
            stop_at = time.monotonic() + PARALLEL_SECONDS

            def worker(i):
                while time.monotonic() < stop_at:
                    out = subprocess.run(d.ssh("true"), env=self.env, stdin=subprocess.DEVNULL, capture_output=True)
                    if out.returncode == 0:
                        done[i] += 1
                    else:
                        failed[i] += 1

            t0 = time.monotonic()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(PARALLEL)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            self.results[f"sps.{d.name}"] = sum(done) / elapsed
            self.results[f"sps_failed.{d.name}"] = sum(failed)
            log(f"sessions/s {d.name}: {sum(done) / elapsed:.1f} ({sum(failed)} failed)")

    def idle_sessions(self):
        """Holds IDLE_SESSIONS idle sessions on each daemon at once (benches/idle_client.py: one
        asyncssh process, a connection per session, each running `cat` on an open stdin),
        reads the daemons' memory, and times a session on an open connection while they stay
        open; then IDLE_SESSIONS_KEYPORT on keyport alone, the same way; and keyport's memory
        once they have all closed."""
        _, rss_before, _ = self.keyport.memory()
        self.results["idle_rss_before.keyport"] = rss_before
        held = []
        try:
            for d in (self.keyport, self.sshd):
                held.append(self.hold_idle(d, IDLE_SESSIONS))
            runs = self.mux_sessions([("bench0", self.keyport, None, None), ("sshd", self.sshd, None, None)])
            self.results["mux_idle.keyport"], self.results["mux_idle.sshd"] = runs["bench0"], runs["sshd"]
            log(f"with {IDLE_SESSIONS} idle sessions open: keyport {runs['bench0']:.2f} ms, sshd {runs['sshd']:.2f} ms")
        finally:
            for h in held:
                self.release_idle(h)
        large = self.idle_fit(IDLE_SESSIONS_KEYPORT)
        if large:
            h = self.hold_idle(self.keyport, large, tag="large")
            try:
                runs = self.mux_sessions([("bench0", self.keyport, None, None), ("sshd", self.sshd, None, None)])
                self.results["mux_large.keyport"], self.results["mux_large.sshd"] = runs["bench0"], runs["sshd"]
                log(f"with {large} idle sessions open on keyport: keyport {runs['bench0']:.2f} ms, "
                    f"sshd {runs['sshd']:.2f} ms")
            finally:
                self.release_idle(h)
        # keyport hands freed memory back within 5 s of sessions ending (src/ssh/trim.rs).
        time.sleep(7)
        _, rss, _ = self.keyport.memory()
        self.results["idle_rss_closed.keyport"] = rss
        log(f"keyport RSS before the idle sessions {rss_before} KiB, after they all closed {rss} KiB")

    def idle_fit(self, wanted):
        """How many of `wanted` idle sessions keyport's open-files limit leaves room for (a
        tenth kept spare), at the descriptors per session the first idle step measured."""
        per = self.results.get("idle_fds.keyport")
        if not wanted or not per:
            return wanted
        with open(f"/proc/{self.keyport.proc.pid}/limits") as f:
            limit = next(int(line.split()[3]) for line in f if line.startswith("Max open files"))
        used = len(os.listdir(f"/proc/{self.keyport.proc.pid}/fd"))
        fit = int((limit - used) * 0.9 / per)
        self.results["idle_fds_limit.keyport"] = limit
        if fit < wanted:
            self.notes.append(
                f"{wanted} idle sessions on keyport do not fit its open-files limit of {limit} "
                f"(the hard limit this machine allows; raising it needs CAP_SYS_RESOURCE) at "
                f"{per:.1f} descriptors per session: {fit} were held instead."
            )
            log(self.notes[-1])
        return min(fit, wanted)

    def hold_idle(self, d, count, tag=""):
        """Opens `count` idle sessions on `d` and records the daemon's memory with them open;
        returns what release_idle closes."""
        n0, rss0, pss0 = d.memory()
        fds0 = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        errlog = open(self.path(f"idle-{d.name}{tag}.log"), "wb")
        client = subprocess.Popen(
            ["/usr/bin/python3", "-B", IDLE_CLIENT, "127.0.0.1", str(d.port), d.user, d.key, str(count), "50"],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
        )  # fmt: skip
        started = time.monotonic()
        line = client.stdout.readline().decode().strip()
        if line != f"open {count}":
            client.kill()
            raise RuntimeError(f"{d.name}: {count} idle sessions did not open; see {errlog.name}")
        time.sleep(2)
        n1, rss1, pss1 = d.memory()
        fds1 = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        suffix = f"_{tag}" if tag else ""
        self.results[f"idle_fds{suffix}.{d.name}"] = (fds1 - fds0) / count
        self.results[f"idle_count{suffix}.{d.name}"] = count
        self.results[f"idle{suffix}.{d.name}"] = (rss1 - rss0) / count
        self.results[f"idle_pss{suffix}.{d.name}"] = (pss1 - pss0) / count
        self.results[f"idle_procs{suffix}.{d.name}"] = (n0, n1)
        self.results[f"idle_rss{suffix}.{d.name}"] = (rss0, rss1)
        log(
            f"{count} idle sessions {d.name} (opened in {time.monotonic() - started:.0f} s): {n0} -> {n1} "
            f"processes, RSS {rss0} -> {rss1} KiB ({(rss1 - rss0) / count:.1f} KiB/session), "
            f"PSS {pss0} -> {pss1} KiB ({(pss1 - pss0) / count:.1f} KiB/session)"
        )
        return d, client, errlog, n0

    def release_idle(self, held):
        d, client, errlog, n0 = held
        try:
            client.stdin.write(b"\n")
            client.stdin.flush()
            client.stdout.readline()
            client.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            client.kill()
            client.wait()
        errlog.close()
        wait_for(f"{d.name} to close the sessions", lambda: d.memory()[0] <= n0 + 1, timeout=120)

    def session_start(self):
        """A session on an open connection: sshd, keyport user `bench0` (no secrets) and
        keyport user `bench100` (SECRETS secrets, each with an env and a file target under ~),
        all as the same OS account, interleaved. The files hold their values after the first
        session, so this is the steady state (nothing rewritten; the micro benchmark has the
        all-changed case)."""
        key = self.path("keys", "secrets")
        pub = self.keygen(key, "e2e-secrets")
        self.keyport_cli("user", "add", "bench100", "--os-user", self.os_user, "--login-key", pub)
        token = self.keyport_cli("token", "create", "e2e", "--user", "bench100").strip().splitlines()[-1].strip()
        entries = [
            {"name": f"secret-{i}", "value": f"ghp_{i:036d}", "env": f"E2E_SECRET_{i}", "file": f"~/.config/e2e/s{i}"}
            for i in range(SECRETS)
        ]
        with open(self.path("secrets.json"), "w") as f:
            json.dump(entries, f)
        self.keyport_cli("secret", "import", self.path("secrets.json"), KEYPORT_URL=self.api_url, KEYPORT_TOKEN=token)
        k = self.keyport
        last = SECRETS - 1
        check = f'test "$(cat ~/.config/e2e/s{last})" = "$E2E_SECRET_{last}" && test -n "$E2E_SECRET_{last}"'
        self.time_ssh(k.ssh(check, key=key, user="bench100"))  # fails unless both were injected
        runs = self.mux_sessions(
            [("bench0", k, None, None), ("bench100", k, key, "bench100"), ("sshd", self.sshd, None, None)]
        )
        a, b = runs["bench0"], runs["bench100"]
        self.results["secrets.0"], self.results["secrets.n"] = a, b
        self.results["mux.keyport"], self.results["mux.sshd"] = a, runs["sshd"]
        log(f"session on an open connection: sshd {runs['sshd']:.2f} ms; keyport {a:.2f} ms "
            f"with 0 secrets, {b:.2f} ms with {SECRETS} (+{b - a:.2f} ms)")

    def sources(self):
        """Session start with KV references from OpenBao, cold and warm: e2e_sources.py."""
        e2e_sources.step(self, sys.modules[__name__])

    def after_idle(self):
        """The session on an open connection again, once the idle sessions have come and gone:
        what a daemon's grown memory costs every later session."""
        runs = self.mux_sessions([("bench0", self.keyport, None, None), ("sshd", self.sshd, None, None)])
        self.results["mux_after.keyport"], self.results["mux_after.sshd"] = runs["bench0"], runs["sshd"]
        _, rss, _ = self.keyport.memory()
        self.results["rss_after.keyport"] = rss
        log(f"after the idle sessions: keyport {runs['bench0']:.2f} ms (RSS {rss} KiB), sshd {runs['sshd']:.2f} ms")

    def mux_sessions(self, cases):
        """Median time of `ssh HOST true` over a connection opened once (ControlMaster) per
        case, LATENCY_RUNS runs per case, interleaved, after 3 warm-up rounds: the session
        alone (channel, environment, files, program, exit status), without key exchange,
        login or the TCP stalls of a new connection."""
        masters = {}
        try:
            for name, d, key, user in cases:
                masters[name] = self.master(d, name, key=key, user=user)
            runs = {name: [] for name in masters}
            for round in range(LATENCY_RUNS + 3):
                for name, (_, args) in masters.items():
                    t = self.time_ssh(args)
                    if round >= 3:
                        runs[name].append(t)
        finally:
            for proc, _ in masters.values():
                proc.terminate()
                proc.wait()
        return {name: statistics.median(t) for name, t in runs.items()}

    def master(self, d, name, key=None, user=None):
        """An OpenSSH ControlMaster connection to `d`; returns it and the arguments of an
        `ssh HOST true` session over it."""
        ctl = self.path(f"ctl-{name}")
        if os.path.exists(ctl):
            os.unlink(ctl)
        mux = ("-o", f"ControlPath={ctl}")
        proc = subprocess.Popen(
            d.ssh(key=key, user=user, extra=("-N", "-o", "ControlMaster=yes", *mux)),
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(f"a master connection to {d.name}", lambda: os.path.exists(ctl))
        return proc, d.ssh("true", key=key, user=user, extra=("-o", "ControlMaster=no", *mux))

    def git_clone(self):
        """`git clone` of a small repository that sshd serves, run inside one keyport session:
        through `keyport gitssh` (GIT_SSH_COMMAND, the session's in-memory agent) and through
        plain `ssh -i keyfile`, interleaved."""
        repo = self.path("repo.git")
        src = self.path("repo-src")
        os.makedirs(src)
        git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "-c", "init.defaultBranch=main"]
        run([*git, "init", "-q", src])
        for i in range(20):
            with open(os.path.join(src, f"file{i}.txt"), "w") as f:
                f.write(f"line {i}\n" * 200)
            if i % 4 == 3:
                run([*git, "-C", src, "add", "."])
                run([*git, "-C", src, "commit", "-q", "-m", f"commit {i}"])
        run([*git, "clone", "-q", "--bare", src, repo])
        # The repository and a copy of the client key belong to the bench account, which
        # both the keyport session and sshd's upload-pack run as.
        ssh_dir = os.path.join(self.home, ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        key = os.path.join(ssh_dir, "e2e_client")
        shutil.copyfile(self.client_key, key)
        os.chmod(key, 0o600)
        for path in (ssh_dir, key):
            os.chown(path, self.uid, self.gid)
        run(["chown", "-R", f"{self.uid}:{self.gid}", repo])
        url = f"ssh://{self.os_user}@127.0.0.1:{self.sshd.port}{repo}"
        opts = f"-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o KexAlgorithms={KEX}"
        script = f"""
set -e
if [ -z "$GIT_SSH_COMMAND" ]; then echo "no GIT_SSH_COMMAND in the keyport session" >&2; exit 3; fi
eval "$GIT_SSH_COMMAND -V" >/dev/null 2>&1 || {{ echo "GIT_SSH_COMMAND ($GIT_SSH_COMMAND) does not run" >&2; exit 3; }}
gitssh="$GIT_SSH_COMMAND {opts}"
plain="ssh {opts} -o IdentitiesOnly=yes -i $HOME/.ssh/e2e_client"
mkdir -p ~/clones
ms() {{ echo $(( ($(date +%s%N) - $1) / 1000 )); }}
for i in $(seq 0 {GIT_RUNS}); do
  t=$(date +%s%N); GIT_SSH_COMMAND="$gitssh" git clone -q {url} ~/clones/g$i; g=$(ms $t)
  t=$(date +%s%N); GIT_SSH_COMMAND="$plain" git clone -q {url} ~/clones/p$i; p=$(ms $t)
  rm -rf ~/clones/g$i ~/clones/p$i
  if [ $i -gt 0 ]; then echo "$g $p"; fi
done
"""
        out = subprocess.run(self.keyport.ssh("bash", "-s"), env=self.env, input=script.encode(), capture_output=True)
        if out.returncode == 3:
            self.notes.append(f"git row not measured: {out.stderr.decode().strip()}")
            log(f"git clone: skipped ({out.stderr.decode().strip()})")
            return
        if out.returncode != 0:
            raise RuntimeError(f"git clone in a keyport session: {out.stderr.decode()}")
        pairs = [tuple(int(x) / 1000 for x in line.split()) for line in out.stdout.decode().split("\n") if line.strip()]
        g = statistics.median(p[0] for p in pairs)
        p = statistics.median(p[1] for p in pairs)
        self.results["git.gitssh"], self.results["git.plain"] = g, p
        log(f"git clone: {g:.1f} ms through keyport gitssh, {p:.1f} ms with ssh -i keyfile")


def mask_section(r):
    """The mask step's table and how it was measured (RESULTS.md)."""
    on, off = r["mask.on"], r["mask.off"]
    ratio = on / off
    met = "yes" if ratio >= 0.95 else "**no**"
    return f"""\
## Masking: pty output with masking on vs off

| metric | masking on | masking off | ratio (on ÷ off) | design target | met? |
|---|---:|---:|---:|---|---|
| pty output, `cat` of {MASK_TRANSFER}iB of text, MB/s | {on:.0f} | {off:.0f} | {ratio:.2f}× | ≥ 0.95× off (< 5 % cost) | {met} |
| keyport's CPU during those transfers, % of one core | {r['mask.cpu.on']:.0f} | {r['mask.cpu.off']:.0f} | — | reported | — |

How it was measured: keyport users `benchmask` ({MASK_SECRETS} token secrets of 40 bytes,
starting as real ones do: `ghp_`, `npm_`, `sk-`, `xoxb-`, `AKIA`, …; masked by default) and
`benchnomask` (the same secrets with `"mask": false`), both as the bench account, checked first
(a pty `printf` of one value shows `***` for the first and the value for the second). Each runs
`ssh -tt HOST 'cat FILE' | wc -c` of a {MASK_TRANSFER}iB text file (this README repeated, one of
the values every 64 KiB), interleaved, best of {TRANSFER_REPS}, MB = 10^6 bytes of the file;
keyport's CPU is its utime + stime over the runs' wall time. Bytes received: on
{r.get('mask.bytes.on', '?')}, off {r.get('mask.bytes.off', '?')} (the pty's `\\r\\n`, and `***` for
each value).
"""


def main():
    if os.geteuid() != 0:
        sys.exit("benches/e2e.py: run as root (sshd needs /run/sshd and its own privilege separation)")
    if not os.access(KEYPORT, os.X_OK):
        sys.exit(f"{KEYPORT} is missing: run benches/e2e.sh, which builds it")
    # The clients' pipes here, and each daemon's sockets and pipes: about 10 fds a session.
    # Raised as far as the hard limit allows (a container may cap it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, max(IDLE_SESSIONS, IDLE_SESSIONS_KEYPORT) * 16)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < IDLE_SESSIONS * 10:
        log(f"warning: open files limited to {hard}; {IDLE_SESSIONS} sessions may not fit")
    bench = Bench()
    try:
        bench.create_account()
        bench.start_keyport()
        bench.start_sshd()
        # The idle sessions grow the daemons' memory: they come last, then what that costs.
        steps = (bench.latency, bench.session_start, bench.sources, bench.git_clone, bench.throughput,
                 bench.slow_reader, bench.relay, bench.mask, bench.sessions_per_second,
                 bench.idle_sessions, bench.after_idle)  # fmt: skip
        chosen = os.environ.get("E2E_STEPS")
        for step in steps:
            if chosen and step.__name__ not in chosen.split(","):
                continue
            log(f"-- {step.__name__}")
            step()
    finally:
        bench.stop()
    cfg = types.SimpleNamespace(**{k: v for k, v in globals().items() if k.isupper()})
    report = e2e_report.render(bench.results, bench.notes, cfg, os.environ.get("E2E_MICRO"))
    if "mask.on" in bench.results:
        report += "\n" + mask_section(bench.results)
    print(report)
    with open(RESULTS, "w") as f:
        f.write(report)
    log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
