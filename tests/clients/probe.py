"""Requests the OpenSSH client cannot send, asked of an SSH server the way other clients ask
them; the answer is one JSON object on stdout. tests/sshd_parity.rs runs each case against
keyport and against OpenSSH's sshd and compares.

usage: probe.py CASE PORT USER KEY [ARG]
"""

import json
import socket
import sys
import threading
import time

import paramiko
from paramiko.common import (
    MSG_CHANNEL_FAILURE,
    cMSG_CHANNEL_REQUEST,
    cMSG_GLOBAL_REQUEST,
)
from paramiko.message import Message

TIMEOUT = 10


def _failed(chan, m):
    # paramiko closes a channel whose request was refused; sshd does not, and neither do the
    # clients this probe stands for: record the refusal and keep the channel.
    chan.event_ready = False
    chan.refused = True
    chan.event.set()


paramiko.Transport._channel_handler_table[MSG_CHANNEL_FAILURE] = _failed


def connect(port, user, key):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    t = paramiko.Transport(sock)
    t.start_client(timeout=TIMEOUT)
    t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(key))
    return t


def request(chan, kind, payload=b"", want_reply=True):
    """Sends a channel request; returns "success", "failure", "no reply" or None."""
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(kind)
    m.add_boolean(want_reply)
    m.add_bytes(payload)
    chan.refused = False
    if want_reply:
        chan._event_pending()
    chan.transport._send_user_message(m)
    if not want_reply:
        return None
    if not chan.event.wait(TIMEOUT):
        return "no reply"
    return "failure" if chan.refused else "success"


def string(s):
    m = Message()
    m.add_string(s)
    return m.asbytes()


def uint32(n):
    m = Message()
    m.add_int(n)
    return m.asbytes()


def finish(chan, timeout=TIMEOUT):
    """Everything the channel's program printed, and how it ended."""
    chan.settimeout(timeout)
    out = b""
    try:
        while True:
            data = chan.recv(65536)
            if not data:
                break
            out += data
    except socket.timeout:
        return {"stdout": out.decode(errors="replace"), "status": "timeout"}
    return {"stdout": out.decode(errors="replace"), "status": chan.recv_exit_status()}


def case_x11(t, arg):
    """x11-req, then a command on the same channel (plink -X, paramiko request_x11)."""
    chan = t.open_session()
    payload = b"\0" + string("MIT-MAGIC-COOKIE-1") + string("00" * 16) + uint32(0)
    x11 = request(chan, "x11-req", payload)
    ran = request(chan, "exec", string("echo hi; exit 4"))
    return {"x11-req": x11, "exec": ran, **finish(chan)}


def case_x11_api(t, arg):
    """paramiko's own request_x11(): returns or raises, never hangs."""
    chan = t.open_session()
    result = {}

    def call():
        try:
            chan.request_x11()
            result["x11"] = "returned"
        except Exception as e:  # paramiko raises SSHException when refused
            result["x11"] = "raised"

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        return {"x11": "hung"}
    second = t.open_session()
    second.exec_command("echo after; exit 3")
    return {**result, **finish(second)}


def case_second_exec(t, arg):
    """A second program request on a busy channel."""
    chan = t.open_session()
    first = request(chan, "exec", string("sleep 1; echo first"))
    second = request(chan, "exec", string("echo second"))
    return {"first": first, "second": second, **finish(chan)}


def case_after_start(t, arg):
    """Set-up requests after the program started."""
    chan = t.open_session()
    request(chan, "exec", string("sleep 1; echo done"))
    env = request(chan, "env", string("LANG") + string("C"))
    pty = request(
        chan,
        "pty-req",
        string("xterm") + uint32(80) + uint32(24) + uint32(0) + uint32(0) + string(""),
    )
    agent = request(chan, "auth-agent-req@openssh.com")
    return {"env": env, "pty-req": pty, "agent": agent, **finish(chan)}


def case_break(t, arg):
    """break (RFC 4335): a line break on a pty, refused without one; the channel goes on."""
    with_pty = t.open_session()
    with_pty.get_pty()
    request(with_pty, "exec", string("sleep 1; echo pty; exit 5"))
    on_pty = request(with_pty, "break", uint32(500))
    plain = t.open_session()
    request(plain, "exec", string("sleep 1; echo plain; exit 6"))
    without = request(plain, "break", uint32(500))
    a, b = finish(with_pty), finish(plain)
    return {
        "pty": on_pty,
        "no-pty": without,
        "pty-status": a["status"],
        "plain-status": b["status"],
        "plain-stdout": b["stdout"],
    }


def case_eow(t, arg):
    """eow@openssh.com: the program's stdout is closed (it sees EPIPE)."""
    chan = t.open_session()
    request(chan, "exec", string("trap '' PIPE; while echo x; do :; done; exit 7"))
    chan.settimeout(TIMEOUT)
    chan.recv(1)
    request(chan, "eow@openssh.com", want_reply=False)
    # Output that never stops is the failure this looks for: a deadline over the whole drain.
    deadline = time.monotonic() + TIMEOUT
    try:
        while chan.recv(65536):
            if time.monotonic() > deadline:
                return {"status": "output never stopped"}
    except socket.timeout:
        return {"status": "timeout"}
    return {"status": chan.recv_exit_status()}


def case_no_more_sessions(t, arg):
    """no-more-sessions@openssh.com, then another session channel."""
    first = t.open_session()
    m = Message()
    m.add_byte(cMSG_GLOBAL_REQUEST)
    m.add_string("no-more-sessions@openssh.com")
    m.add_boolean(False)
    t._send_user_message(m)
    request(first, "exec", string("echo first"))
    try:
        t.open_session(timeout=TIMEOUT)
        second = "opened"
    except Exception:
        second = "refused"
    return {"second": second}


def case_global(t, arg):
    """A global request nobody implements (keepalive@openssh.com, as OpenSSH sends it)."""
    reply = t.global_request("keepalive@openssh.com", wait=True)
    return {"keepalive": "success" if reply is not None else "failure"}


def case_running(t, arg):
    """Requests a running program takes (window-change and signal, with a reply asked for),
    and one nobody implements."""
    chan = t.open_session()
    request(chan, "exec", string("trap 'echo got; exit 3' USR1; echo ready; sleep 5 & wait"))
    chan.settimeout(TIMEOUT)
    ready = b""
    while not ready.endswith(b"ready\n"):
        ready += chan.recv(1)  # the trap is set once this is printed
    size = request(chan, "window-change", uint32(100) + uint32(40) + uint32(0) + uint32(0))
    unknown = request(chan, "nobody@example.com", string("x"))
    signal = request(chan, "signal", string("USR1"))
    return {"window-change": size, "unknown": unknown, "signal": signal, **finish(chan)}


def case_streamlocal(t, arg):
    """streamlocal-forward@openssh.com (ssh -R /path:...): keyport forwards no sockets."""
    reply = t.global_request("streamlocal-forward@openssh.com", (arg,), wait=True)
    return {"streamlocal-forward": "success" if reply is not None else "failure"}


def case_max_sessions(t, arg):
    """Session channels past MaxSessions on one connection."""
    held, refused = [], 0
    for _ in range(int(arg)):
        try:
            chan = t.open_session(timeout=TIMEOUT)
            chan.exec_command("sleep 20")
            held.append(chan)
        except Exception:
            refused += 1
    return {"opened": len(held), "refused": refused, "still_up": t.is_active()}


def case_env_flood(t, arg):
    """64 env requests of `arg` bytes each on one channel: how many are accepted."""
    chan = t.open_session()
    value = "v" * int(arg)
    answers = [request(chan, "env", string(f"LC_FLOOD{n}") + string(value)) for n in range(64)]
    ran = request(chan, "exec", string("env | grep -c '^LC_FLOOD' || true"))
    out = finish(chan)
    return {
        "accepted": answers.count("success"),
        "refused": answers.count("failure"),
        "exec": ran,
        "in_env": out["stdout"].strip(),
    }


def main_wrong_keys(port, key, count):
    turned_away = failed = 0
    wrong = paramiko.Ed25519Key.from_private_key_file(key)
    for n in range(count):
        sock = socket.socket()
        sock.settimeout(TIMEOUT)
        sock.bind(("127.0.0.2", 0))
        try:
            sock.connect(("127.0.0.1", port))
            t = paramiko.Transport(sock)
            t.start_client(timeout=TIMEOUT)
        except Exception:
            turned_away += 1
            sock.close()
            continue
        try:
            t.auth_publickey(f"nobody{n}", wrong)
        except Exception:
            failed += 1
        finally:
            t.close()
    return {"turned_away": turned_away, "failed": failed}


def case_window_changes(t, arg):
    """`arg` window-change requests on a channel without a pty, then a command's answer."""
    chan = t.open_session()
    request(chan, "exec", string("read line; echo \"got $line\""))
    size = uint32(100) + uint32(40) + uint32(0) + uint32(0)
    for _ in range(int(arg)):
        request(chan, "window-change", size, want_reply=False)
    chan.sendall(b"done\n")
    # The channel's task reads every one of them first: allow for a busy machine.
    return finish(chan, timeout=120)


CASES = {
    "window-changes": case_window_changes,
    "max-sessions": case_max_sessions,
    "env-flood": case_env_flood,
    "running": case_running,
    "streamlocal": case_streamlocal,
    "x11": case_x11,
    "x11-api": case_x11_api,
    "second-exec": case_second_exec,
    "after-start": case_after_start,
    "break": case_break,
    "eow": case_eow,
    "no-more-sessions": case_no_more_sessions,
    "global": case_global,
}


def main():
    case, port, user, key = sys.argv[1:5]
    arg = sys.argv[5] if len(sys.argv) > 5 else None
    if case == "wrong-keys":
        print(json.dumps(main_wrong_keys(int(port), key, int(arg)), sort_keys=True))
        return
    t = connect(int(port), user, key)
    try:
        result = CASES[case](t, arg)
    finally:
        t.close()
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
