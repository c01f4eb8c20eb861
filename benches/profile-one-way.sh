#!/usr/bin/env bash
# Where a one-way message's CPU time goes, on each side: runs the bus's
# one-way loop alone (`domi-bench --one-way-only`, client shard on CPU 0,
# server shard on CPU 1) under `perf record -a`, then splits each shard's
# samples into its own work (the send path, or the receive dispatch and the
# handler) and the kernel's (TCP, copies, syscalls), in nanoseconds of CPU
# per message: a group's share of the shard's samples x the shard's busy
# time / the run's rate. A shard that is not the bottleneck shows idle time
# or time polling an empty socket.
#
#   benches/profile-one-way.sh        # 64 B payloads
#   benches/profile-one-way.sh 16     # 16 B
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
sleep 1.5
perf record -F 10000 -a -o "$out/perf.data" -- sleep 3 >/dev/null 2>&1
wait "$bench"

rate=$(awk -F'|' -v row="bus notify $payload B" '$2 ~ row { gsub(/ /, "", $3); print $3; exit }' "$out/report.md")
echo "one-way $payload B: $rate msg/s over the run; CPU per message on each shard (perf, 3 s):"
perf report -i "$out/perf.data" --no-children --sort comm,dso,sym -g none --percent-limit 0 --stdio 2>/dev/null |
    awk -v rate="$rate" -v cpus="$(nproc)" '
    function group(dso, sym) {
        if (dso ~ /kernel/) return "kernel (TCP, copies, syscalls)"
        if (sym ~ /serve::|deliver|decode|Session|flush_session|Action|Replier|telemetry/) return "receive dispatch"
        if (sym ~ /server::run/) return "handler"
        if (sym ~ /pick_with|conn_to|push_marked|encode|RawTask|memmove|notify/) return "send path"
        return "other (libc, vDSO, runtime)"
    }
    /^ +[0-9.]+%/ {
        pct = $1; sub(/%/, "", pct)
        comm = $2; dso = $3; sym = ""
        for (i = 5; i <= NF; i++) sym = sym " " $i
        if (comm !~ /^domi-[0-9]/) next
        share[comm] += pct
        part[comm, group(dso, sym)] += pct
    }
    END {
        ns = 1e9 / rate
        for (c in share) {
            busy = share[c] / 100 * cpus
            if (busy < 0.2) continue
            side = part[c, "receive dispatch"] > part[c, "send path"] ? "receiver" : "sender"
            printf "  %s (%s): busy %.0f%% of its CPU, %.0f ns per message\n", side, c, busy * 100, ns * (busy > 1 ? 1 : busy)
            for (k in part) {
                split(k, key, SUBSEP)
                if (key[1] != c || part[k] == 0) continue
                printf "    %-32s %6.1f ns\n", key[2], part[k] / share[c] * ns * (busy > 1 ? 1 : busy)
            }
        }
    }'
