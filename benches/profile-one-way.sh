#!/usr/bin/env bash
# Where a one-way message's CPU time goes, on each side: runs the bus's
# one-way loop alone (`domi-bench --one-way-only`, the sending shard in the
# bench process on CPU 0, the receiving shard in its server child process on
# CPU 1) under `perf record -a -e cpu-clock`, then splits each shard
# thread's samples into user space (the shard's own work: the producer and
# the send path on the sender; reading frames, dispatch and the handler on
# the receiver) and the kernel (TCP, copies, syscalls), in nanoseconds of CPU
# per message: a part's share of all samples x the CPUs sampled / the run's
# rate. A shard that is not the bottleneck shows idle time, or user and
# kernel time spent polling an empty (or retrying a full) socket.
#
#   benches/profile-one-way.sh          # 64 B payloads
#   benches/profile-one-way.sh 16       # 16 B
#   MESSAGES=400000000 benches/...      # a longer run (default 200 M messages)
#
# Needs perf (Debian: linux-perf) and root or kernel.perf_event_paranoid <= 0.
# Output: target/profile-one-way/ (perf.data, report.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

payload="${1:-64}"
messages="${MESSAGES:-200000000}"
out=target/profile-one-way
bin=target/release/domi-bench

command -v perf >/dev/null || { echo "perf not found (Debian: apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -p domi-bench
mkdir -p "$out"

# Record 3 s from 1.5 s in: well inside a run of 200 M messages (8 s or more
# at this machine's rates), past the connection set-up.
"$bin" --one-way-only "$payload" --messages "$messages" --reps 1 --out "$out" >/dev/null &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT
sleep 1.5
# The receiving shard's thread names, from the server child process.
server=$(pgrep -P "$bench" -f ' server ' | head -n1 || true)
[[ -n $server ]] || { echo "the bench's server process did not start" >&2; exit 1; }
receivers=$(cat /proc/"$server"/task/*/comm | tr '\n' ' ')
if ! perf record -e cpu-clock -F 10000 -a -o "$out/perf.data" -- sleep 3 >"$out/perf-record.log" 2>&1; then
    cat "$out/perf-record.log" >&2
    exit 1
fi
wait "$bench"
trap - EXIT

rate=$(awk -F'|' -v row="bus notify $payload B" '$2 ~ row { gsub(/ /, "", $3); print $3; exit }' "$out/report.md")
echo "one-way $payload B: $rate msg/s over the run; CPU per message on each shard (perf, 3 s):"
perf report -i "$out/perf.data" --no-children --sort comm,dso -g none --percent-limit 0 --stdio 2>/dev/null |
    awk -v rate="$rate" -v cpus="$(nproc --all)" -v receivers=" $receivers" '
    /^ +[0-9.]+%/ {
        pct = $1; sub(/%/, "", pct)
        comm = $2
        if (comm !~ /^domi-[0-9]/) next
        side = index(receivers, " " comm " ") ? "receiver" : "sender"
        part = ($3 ~ /kernel/) ? "kernel" : "user"
        t[side] += pct; p[side, part] += pct; name[side] = comm
    }
    END {
        ns = 1e9 / rate
        split("sender receiver", sides, " ")
        for (i = 1; i <= 2; i++) {
            s = sides[i]
            if (!(s in t)) continue
            printf "  %-8s (%s): busy %3.0f%% of its CPU: %5.1f ns per message = user space %5.1f ns + kernel %5.1f ns\n",
                s, name[s], t[s] / 100 * cpus * 100, t[s] / 100 * cpus * ns,
                p[s, "user"] / 100 * cpus * ns, p[s, "kernel"] / 100 * cpus * ns
        }
    }'
