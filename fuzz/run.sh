#!/usr/bin/env bash
# Runs every cargo-fuzz target of domi for a fixed time each.
#
#   fuzz/run.sh                       # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh      # longer runs
#   fuzz/run.sh record admin_route    # only some targets
#
# Works from any directory (`make fuzz` calls it from the repo root) and on a
# stable toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer, -Cpasses=
# sancov-module), which RUSTC_BOOTSTRAP=1 unlocks. The default address
# sanitizer builds fine that way; set FUZZ_SANITIZER=none to build without it.
#
# New corpus entries go to fuzz/corpus/<target>/ (git-ignored); the seeds in
# fuzz/seeds/<target>/ are read as well. Crashing inputs land in
# fuzz/artifacts/<target>/, full libFuzzer logs in fuzz/target/fuzz-logs/.
# Exits non-zero if any target crashes (or fails to build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Build everything up front so the time budget goes to fuzzing only.
for t in "${targets[@]}"; do
    if ! out="$(cargo fuzz build --sanitizer "$sanitizer" "$t" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "fuzz $t: build failed" >&2
        exit 1
    fi
done

mkdir -p target/fuzz-logs
failed=()
for t in "${targets[@]}"; do
    log="target/fuzz-logs/$t.log"
    mkdir -p "corpus/$t"
    corpora=("corpus/$t")
    [[ -d "seeds/$t" ]] && corpora+=("seeds/$t")
    status=0
    # -use_value_profile=1: comparison operands count as coverage, which gets
    # the fuzzer past magic numbers and exact-match checks quickly.
    # -timeout=30: an input running longer is a hang, reported as a crash
    # (libFuzzer's default waits 20 minutes).
    cargo fuzz run --sanitizer "$sanitizer" "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -use_value_profile=1 -print_final_stats=1 -timeout=30 \
        >"$log" 2>&1 || status=$?

    # libFuzzer's last line on a clean run: "Done 12345 runs in 60 second(s)".
    done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
    if [[ -n "$done_line" ]]; then
        runs="$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")"
        secs="$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")"
    else
        # No "Done" line (crash or build failure): fall back to the last status line.
        runs="$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)"
        secs="?"
    fi
    runs="${runs:-?}"

    if [[ $status -eq 0 ]]; then
        echo "fuzz $t: $secs s, $runs runs, no crash"
    else
        failed+=("$t")
        artifact="$(grep -oE 'artifacts/[^ ]+' "$log" | tail -n 1 || true)"
        echo "fuzz $t: CRASH after ${runs} runs (exit $status)${artifact:+, input in fuzz/$artifact}; log: fuzz/$log"
        grep -E 'panicked at|ERROR: |SUMMARY: ' "$log" | head -n 5 | sed 's/^/    /' || true
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
