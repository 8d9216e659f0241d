#!/usr/bin/env bash
# keyport vs OpenSSH sshd, side by side in one run: installs what is missing (Debian), builds
# keyport in release, runs the micro benchmarks, then benches/e2e.py, which starts both daemons,
# measures, prints the table and writes benches/RESULTS.md.
#
#   sudo benches/e2e.sh              # everything (under 10 minutes on 2 cores, build included)
#   sudo benches/e2e.sh --no-micro   # the end-to-end comparison only
#   sudo E2E_STEPS=mask benches/e2e.sh --no-micro   # one step: pty output, masking on vs off
#   sudo benches/e2e.sh --quick      # the same ratios on smaller sizes, in under 2 minutes after
#                                    # the build: a check for every change to the data path;
#                                    # written to target/keyport-e2e-quick.md, not RESULTS.md
#
# Run as root: sshd needs /run/sshd, and both daemons run the sessions as a fresh OS account
# that the run creates (and removes at the end).
# Knobs for a quicker look (E2E_IDLE_SESSIONS=100 …) are listed at the top of benches/e2e.py.
set -euo pipefail
cd "$(dirname "$0")/.."

micro=1
for arg in "$@"; do
    case "$arg" in
        --no-micro) micro=0 ;;
        --quick)
            micro=0
            # Knobs left as the caller set them; E2E_STEPS too (relay, mask, sources and git
            # need more set-up than they would measure here).
            export E2E_LATENCY_RUNS="${E2E_LATENCY_RUNS:-15}" E2E_TRANSFER="${E2E_TRANSFER:-200M}" \
                E2E_TRANSFER_REPS="${E2E_TRANSFER_REPS:-1}" E2E_PARALLEL_SECONDS="${E2E_PARALLEL_SECONDS:-3}" \
                E2E_IDLE_SESSIONS="${E2E_IDLE_SESSIONS:-200}" E2E_IDLE_SESSIONS_KEYPORT="${E2E_IDLE_SESSIONS_KEYPORT:-0}" \
                E2E_SLOW_READER="${E2E_SLOW_READER:-20000000}" E2E_SECRETS="${E2E_SECRETS:-20}" \
                E2E_STEPS="${E2E_STEPS:-latency,session_start,throughput,slow_reader,sessions_per_second,idle_sessions,after_idle}" \
                E2E_RESULTS="${E2E_RESULTS:-target/keyport-e2e-quick.md}"
            ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "e2e.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "e2e.sh: run as root (sshd needs /run/sshd; the sessions run as an OS account the run creates)" >&2
    exit 2
fi

# Debian packages for each tool that is missing.
missing=()
command -v ssh >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v git >/dev/null || missing+=(git)
command -v python3 >/dev/null || missing+=(python3)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# The idle-sessions client (benches/idle_client.py) runs on Debian's Python with asyncssh.
/usr/bin/python3 -c 'import asyncssh' 2>/dev/null || missing+=(python3-asyncssh)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
    echo "e2e.sh: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
    exit 2
fi

start=$SECONDS
micro_out=""
if [ "$micro" = 1 ]; then
    # One build for both: the bench build also builds the keyport binary (release profile).
    echo "== building keyport and the micro benchmarks (release)" >&2
    cargo bench --locked --bench micro --no-run >&2
    echo "== micro benchmarks (cargo bench --bench micro)" >&2
    micro_out=target/keyport-micro-bench.txt
    cargo bench --locked --bench micro 2>&1 | tee "$micro_out" >&2
else
    echo "== building keyport (release)" >&2
    cargo build --release --locked --bin keyport >&2
fi

echo "== end to end (build and micro benchmarks took $((SECONDS - start)) s)" >&2
E2E_MICRO="$micro_out" python3 -B benches/e2e.py
echo "== done in $((SECONDS - start)) s" >&2
