"""What asyncssh users meet: pty terminal modes and sftp symlinks. One JSON object on stdout.
tests/sshd_parity.rs runs each case against keyport and against OpenSSH's sshd.

usage: asyncprobe.py CASE PORT USER KEY [ARG]
"""

import asyncio
import json
import sys

import asyncssh


async def connect(port, user, key):
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


async def case_modes(conn, arg):
    """ECHO off, VINTR ^A, VERASE ^H, IUTF8 on: what stty sees in the session."""
    modes = {
        asyncssh.PTY_ECHO: 0,
        asyncssh.PTY_VINTR: 1,
        asyncssh.PTY_VERASE: 8,
        asyncssh.PTY_IUTF8: 1,
    }
    result = await conn.run("stty -a", term_type="xterm", term_modes=modes, timeout=20)
    words = result.stdout.replace(";", " ").split()
    pick = lambda name: words[words.index(name) + 2] if name in words else None
    return {
        "intr": pick("intr"),
        "erase": pick("erase"),
        "echo": "-echo" not in words,
        "iutf8": "iutf8" in words,
    }


async def case_symlink(conn, arg):
    """sftp.symlink(target, link) makes link point at target."""
    base = arg
    async with conn.start_sftp_client() as sftp:
        await sftp.symlink(f"{base}/target.txt", f"{base}/link.txt")
        return {"link": await sftp.readlink(f"{base}/link.txt")}


CASES = {"modes": case_modes, "symlink": case_symlink}


async def main():
    case, port, user, key = sys.argv[1:5]
    arg = sys.argv[5] if len(sys.argv) > 5 else None
    async with await connect(int(port), user, key) as conn:
        result = await CASES[case](conn, arg)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
