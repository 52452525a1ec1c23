#!/usr/bin/env bash
# bench_bound.sh - decode speed against the memory-bandwidth bound, measured in adjacent pairs.
#
#   MEMBW=/path/to/membw tools/bench_bound.sh MODEL.gguf [PROMPT_TOKENS] [GEN_TOKENS] [PAIRS]
#
# The copy bandwidth of a shared virtual machine can move between levels within minutes, so a
# bound measured once before a benchmark may not hold while it runs. This script alternates
# membw (best of 3 trials) with one `quill bench` decode run, PAIRS times. For every decode run
# it prints the weight bandwidth streamed: bytes read per step times steps per second, from
# bench's JSON. It gives that as a percentage of membw's copy and read-only bandwidths measured
# right before and right after the run. The decode bound is a bandwidth divided by the bytes per
# token, so each percentage is also the decode rate as a fraction of that bound. membw counts
# copy as 16 bytes per element moved (read plus write) and read as 8 bytes per element summed.
# Use a model whose weights are far larger than the last-level cache: a smaller one is read from
# the caches, and the percentages then do not measure memory.
#
# MEMBW: the binary built from the data folder's peer/membw.c, for example
#   gcc -O3 -march=native -fopenmp peer/membw.c -o membw
# READ (optional): the binary of tools/bench_read.c. It reads a huge-page buffer the way decode
# reads its weights, and with READ set its best figure is printed and compared too.
# Env: QUILL=build/quill  THREADS=2
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:?usage: MEMBW=PATH bench_bound.sh MODEL.gguf [PROMPT_TOKENS] [GEN_TOKENS] [PAIRS]}"
prompt_tokens="${2:-32}"
gen_tokens="${3:-128}"
pairs="${4:-6}"
membw="${MEMBW:?set MEMBW to the membw binary (gcc -O3 -march=native -fopenmp peer/membw.c)}"
quill="${QUILL:-$here/build/quill}"
threads="${THREADS:-2}"
read_probe="${READ:-}"

fail() {
    echo "bench_bound.sh: $*" >&2
    exit 2
}
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[ -f "$model" ] || fail "model '$model' is not a file; pass a GGUF model path"
is_count "$prompt_tokens" || fail "PROMPT_TOKENS '$prompt_tokens' must be a positive integer"
is_count "$gen_tokens" && [ "$gen_tokens" -ge 2 ] ||
    fail "GEN_TOKENS '$gen_tokens' must be 2 or more: the decode rate counts the tokens after the first"
is_count "$pairs" || fail "PAIRS '$pairs' must be a positive integer"
is_count "$threads" || fail "THREADS '$threads' must be a positive integer"
[ -x "$membw" ] || fail "MEMBW '$membw' is not an executable; build peer/membw.c and point MEMBW at it"
[ -z "$read_probe" ] || [ -x "$read_probe" ] ||
    fail "READ '$read_probe' is not an executable; build tools/bench_read.c or unset READ"
[ -x "$quill" ] || fail "QUILL '$quill' is not an executable; build Quill or set QUILL"

# Prints "COPY READ HUGE_PAGE_READ" in GB/s, the best of 3 trials each; the last is 0 without
# READ. Exits when a probe prints no figures.
bandwidths() {
    local huge=0 figures
    if [ -n "$read_probe" ]; then
        huge=$("$read_probe" "$threads" 1024 3 |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["read_best_GBs"])' 2>/dev/null) ||
            fail "READ '$read_probe' printed no read_best_GBs; is it tools/bench_read.c?"
    fi
    figures=$(OMP_NUM_THREADS="$threads" "$membw" 512 3 | python3 -c \
        'import json, sys; r = json.load(sys.stdin); print(r["copy_best_GBs"], r["read_best_GBs"])' \
        2>/dev/null) || fail "MEMBW '$membw' printed no copy_best_GBs; is it peer/membw.c?"
    echo "$figures $huge"
}

# Prints one line: the bandwidths before, the decode run, the bandwidths after, the percentages.
report() { # report "COPY READ" "COPY READ" BENCH_JSON
    python3 -c '
import json
import sys

before = list(map(float, sys.argv[1].split()))
after = list(map(float, sys.argv[2].split()))
run = json.loads(sys.argv[3])
streamed = run["decode_weight_gb_per_second"]
rate = run["decode_tokens_per_second"]
names = ["copy", "read", "huge-page read"]
n_columns = 3 if before[2] > 0 and after[2] > 0 else 2
line = " ".join(f"{v:5.1f}" for v in before[:n_columns])
line += f" | {rate:6.1f} tokens/s, {streamed:5.1f} GB/s | "
line += " ".join(f"{v:5.1f}" for v in after[:n_columns]) + " | "
line += ", ".join(f"{names[i]} {100 * streamed / before[i]:3.0f}/{100 * streamed / after[i]:3.0f} %"
                  for i in range(n_columns))
print(line)
' "$1" "$2" "$3"
}

columns="membw copy, membw read"
[ -n "$read_probe" ] && columns="$columns, huge-page read"
echo "GB/s before ($columns) | decode | GB/s after | decode GB/s as % of each (before/after)"
before=$(bandwidths)
for _ in $(seq 1 "$pairs"); do
    result=$("$quill" bench -m "$model" -p "$prompt_tokens" -n "$gen_tokens" -t "$threads" -r 1 \
        --json) || fail "quill bench failed on '$model' (its message is above)"
    after=$(bandwidths)
    report "$before" "$after" "$result"
    before=$after
done
