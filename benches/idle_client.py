#!/usr/bin/python3
"""Holds COUNT idle SSH sessions open to one daemon from this one process (asyncssh, Debian's
python3-asyncssh), one connection per session, so that 10,000 of them fit on a 2-core machine
(10,000 OpenSSH clients would not). Used by benches/e2e.py for the idle-sessions step, the same
for keyport and sshd.

    idle_client.py HOST PORT USER KEY COUNT [PARALLEL]

Each session runs `echo ready; exec cat > /dev/null` (a program waiting on its input) and
counts once its `ready` line arrived. Prints `open N` when all COUNT are, then waits for a line
on stdin, closes every session and connection, and prints `closed`. Any failure ends it with a
message on stderr and status 1.
"""

import asyncio
import sys
import warnings

warnings.simplefilter("ignore")  # asyncssh's import warns about ciphers it will not use
import asyncssh  # noqa: E402

COMMAND = "echo ready; exec cat > /dev/null"


async def open_one(host, port, user, key, gate):
    async with gate:
        conn = await asyncssh.connect(
            host, port, username=user, client_keys=[key], known_hosts=None,
            kex_algs=["curve25519-sha256"], agent_path=None, config=None,
            # As the OpenSSH client's default; asyncssh's own would pick zlib (a deflate state
            # per direction in both daemons).
            compression_algs=["none"],
        )  # fmt: skip
        proc = await conn.create_process(COMMAND)
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != "ready":
            err = await asyncio.wait_for(proc.stderr.read(), 10)
            raise RuntimeError(f"a session said {line!r} instead of ready (stderr {err!r}, exit {proc.exit_status})")
        return conn, proc


async def main():
    host, port, user, key, count = sys.argv[1:6]
    parallel = int(sys.argv[6]) if len(sys.argv) > 6 else 50
    key = asyncssh.read_private_key(key)
    gate = asyncio.Semaphore(parallel)
    tasks = [asyncio.ensure_future(open_one(host, int(port), user, key, gate)) for _ in range(int(count))]
    try:
        sessions = await asyncio.gather(*tasks)
    except Exception as e:
        print(f"idle_client: {type(e).__name__}: {e}", file=sys.stderr)
        for t in tasks:
            t.cancel()
        sys.exit(1)
    print(f"open {len(sessions)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for conn, proc in sessions:
        proc.stdin.write_eof()
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for conn, _ in sessions), return_exceptions=True)
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
