#!/usr/bin/env bash
# bench_bound.sh - decode speed against the memory-bandwidth bound, measured in adjacent pairs.
#
#   MEMBW=/path/to/membw tools/bench_bound.sh MODEL.gguf [PROMPT_TOKENS] [GEN_TOKENS] [PAIRS]
#
# The copy bandwidth of a shared virtual machine can move between levels within minutes, so a
# bound measured once before a benchmark may not hold while it runs. This script alternates
# membw (copy bandwidth, best of 3) with one `quill bench` decode run, PAIRS times. For every
# decode run it prints the weight bandwidth streamed: bytes read per step times steps per second,
# from bench's JSON. It gives that as a percentage of the copy bandwidth measured right before
# and right after the run. The decode bound is copy bandwidth / bytes per token, so that percentage is
# also the decode rate as a fraction of the bound.
#
# MEMBW: the binary built from the data folder's peer/membw.c, for example
#   gcc -O3 -march=native -fopenmp peer/membw.c -o membw
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

copy_bandwidth() {
    OMP_NUM_THREADS="$threads" "$membw" 512 3 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["copy_best_GBs"])'
}

before=$(copy_bandwidth)
for _ in $(seq 1 "$pairs"); do
    result=$("$quill" bench -m "$model" -p "$prompt_tokens" -n "$gen_tokens" -t "$threads" -r 1 \
        --json)
    after=$(copy_bandwidth)
    python3 - "$before" "$after" "$result" <<'EOF'
import json
import sys

before, after = float(sys.argv[1]), float(sys.argv[2])
run = json.loads(sys.argv[3])
streamed = run["decode_weight_gb_per_second"]
print(f"copy {before:5.1f} GB/s | decode {run['decode_tokens_per_second']:6.1f} tokens/s, "
      f"{streamed:5.1f} GB/s of weights | copy {after:5.1f} GB/s | "
      f"{100 * streamed / before:5.1f} % of the copy before, {100 * streamed / after:5.1f} % after")
EOF
    before=$after
done
