#!/usr/bin/env bash
# bench_compare.sh - measure Quill and llama.cpp side by side on the same GGUF files.
#
#   tools/bench_compare.sh [OUT.jsonl] MODEL.gguf...
#
# For each model and thread count, runs `quill bench --json` and the llama.cpp peer harness
# (llamacpp_bench.mjs from the data folder's peer/, installed by its install.sh) one after the
# other, so both see the same machine state, and prints one JSON line per run plus a table.
# Env: QUILL=build/quill  PEER_DIR=<folder with llamacpp_bench.mjs> (required)
#      NODE_LLAMA_CPP_DIR=$HOME/.cache/quill-peer
#      THREADS="1 2"  P=512  G=128  REPS=3
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: bench_compare.sh OUT.jsonl MODEL.gguf...}"
shift
quill="${QUILL:-$here/build/quill}"
peer_dir="${PEER_DIR:?set PEER_DIR to the folder holding llamacpp_bench.mjs}"
export NODE_LLAMA_CPP_DIR="${NODE_LLAMA_CPP_DIR:-$HOME/.cache/quill-peer}"
threads_list="${THREADS:-1 2}"
n_prompt="${P:-512}"
n_gen="${G:-128}"
reps="${REPS:-3}"

: > "$out"
for model in "$@"; do
    for threads in $threads_list; do
        spread=()
        if [ "$threads" -gt 1 ]; then
            spread=(--spread-threads)
        fi
        quill_json=$("$quill" bench -m "$model" -p "$n_prompt" -n "$n_gen" -t "$threads" \
            -r "$reps" --json)
        peer_json=$(node "$peer_dir/llamacpp_bench.mjs" --model "$model" --threads "$threads" \
            "${spread[@]}" -p "$n_prompt" -n "$n_gen" --reps "$reps" 2>/dev/null | tail -n 1)
        printf '{"engine":"quill","model":"%s","threads":%s,"result":%s}\n' \
            "$(basename "$model")" "$threads" "$quill_json" >> "$out"
        printf '{"engine":"llama.cpp","model":"%s","threads":%s,"result":%s}\n' \
            "$(basename "$model")" "$threads" "$peer_json" >> "$out"
    done
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by_key = {}
for row in rows:
    r = row["result"]
    pp = r.get("prefill_tokens_per_second", r.get("prefill_tok_s"))
    tg = r.get("decode_tokens_per_second", r.get("decode_tok_s"))
    by_key.setdefault((row["model"], row["threads"]), {})[row["engine"]] = (pp, tg)
print(f"{'model':28} {'t':>2} {'quill pp':>9} {'llama pp':>9} {'ratio':>6} "
      f"{'quill tg':>9} {'llama tg':>9} {'ratio':>6}")
for (model, threads), engines in by_key.items():
    q = engines.get("quill", (None, None))
    l = engines.get("llama.cpp", (None, None))
    def ratio(a, b):
        return f"{a / b:6.2f}" if a and b else "     -"
    def num(x):
        return f"{x:9.1f}" if x else "        -"
    print(f"{model:28} {threads:>2} {num(q[0])} {num(l[0])} {ratio(q[0], l[0])} "
          f"{num(q[1])} {num(l[1])} {ratio(q[1], l[1])}")
PY
