#!/usr/bin/env bash
# Soak test, not part of CI: starts `quill serve` on a model, runs `quill bench-serve` in a
# loop for a duration, samples the server's resident memory (RSS) every 10 s, and writes a
# summary. A steadily growing RSS or failed requests point at leaks or instability.
#
#   tools/soak.sh --model PATH [--duration-s 1800] [--port 18080] [--quill build/quill]
#                 [--serve-arg ARG]... [--out soak-<UTC time>] [-- bench-serve options...]
#
# Without bench-serve options after `--`, runs cycle through a mix of load shapes: short and
# long prompts, shared prefixes, low and high concurrency.
#
# Outputs in the --out folder: server.log, rss.csv (elapsed_s,rss_kib), bench.jsonl (one
# bench-serve JSON object per run), summary.txt. Traffic goes only to 127.0.0.1.
set -euo pipefail

model=""
duration_s=1800
port=18080
quill="build/quill"
out="soak-$(date -u +%Y%m%dT%H%M%SZ)"
bench_args=()
serve_args=()
mixed_shapes=(
    "--concurrency 4 --requests 16 --prompt-tokens 128 --shared-prefix 64 --max-tokens 64"
    "--concurrency 8 --requests 16 --prompt-tokens 512 --shared-prefix 256 --max-tokens 32"
    "--concurrency 2 --requests 4 --prompt-tokens 1024 --max-tokens 128"
    "--concurrency 1 --requests 4 --prompt-tokens 16 --max-tokens 256"
)

while [ $# -gt 0 ]; do
    case "$1" in
        --model) model="$2"; shift 2 ;;
        --duration-s) duration_s="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --quill) quill="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --serve-arg) serve_args+=("$2"); shift 2 ;;
        --) shift; bench_args=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
    esac
done
if [ -z "$model" ]; then
    echo "soak.sh: --model PATH is required" >&2
    exit 2
fi
mkdir -p "$out"
url="http://127.0.0.1:$port"

server_pid=""
sampler_pid=""
stop_all() {
    if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_all EXIT INT TERM

# Start the server and wait up to 300 s for GET /v1/models to answer.
"$quill" serve --model "$model" --host 127.0.0.1 --port "$port" "${serve_args[@]}" \
    >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
    if curl -fsS --max-time 2 "$url/v1/models" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "soak.sh: quill serve exited early; see $out/server.log" >&2
        exit 1
    fi
    sleep 1
done

# Sample the server's RSS every 10 s.
start_s=$(date +%s)
echo "elapsed_s,rss_kib" >"$out/rss.csv"
(
    while kill -0 "$server_pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo "")
        echo "$(( $(date +%s) - start_s )),${rss:-0}" >>"$out/rss.csv"
        sleep 10
    done
) &
sampler_pid=$!

# Run bench-serve until the duration is used up; a failed run is recorded, not fatal.
n_runs=0
n_failed_runs=0
while [ $(( $(date +%s) - start_s )) -lt "$duration_s" ]; do
    run_args=("${bench_args[@]}")
    if [ ${#run_args[@]} -eq 0 ]; then
        read -r -a run_args <<<"${mixed_shapes[$((n_runs % ${#mixed_shapes[@]}))]}"
    fi
    if ! "$quill" bench-serve --url "$url" --json "${run_args[@]}" \
            >>"$out/bench.jsonl" 2>>"$out/bench.log"; then
        n_failed_runs=$((n_failed_runs + 1))
    fi
    n_runs=$((n_runs + 1))
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "soak.sh: quill serve died after $n_runs runs; see $out/server.log" >&2
        break
    fi
done

# Summary: request totals, throughput per run, and RSS first, max and last.
{
    echo "duration_s: $(( $(date +%s) - start_s ))"
    echo "bench runs: $n_runs, runs with failures: $n_failed_runs"
    awk -F'[:,]' '
        { for (i = 1; i < NF; i++) {
              if ($i ~ /"requests"$/) requests += $(i + 1)
              if ($i == "\"failed\"") failed += $(i + 1)
              if ($i == "\"output_tokens_per_second\"") { tps += $(i + 1); n += 1 }
          } }
        END { printf "requests: %d, failed: %d, mean output tokens/s per run: %.1f\n",
                     requests, failed, (n > 0 ? tps / n : 0) }' "$out/bench.jsonl" || true
    awk -F, 'NR == 2 { first = $2 } NR > 1 { last = $2; if ($2 > max) max = $2 }
        END { printf "rss_kib first: %d, max: %d, last: %d, growth: %d\n",
                     first, max, last, last - first }' "$out/rss.csv"
    # The KV pool is allocated up front and its pages are touched as the prefix cache fills, so
    # RSS rises early by design; a leak shows as growth between the two halves of the run.
    awk -F, -v half=$(( duration_s / 2 )) 'NR > 1 && $1 <= half && $2 > first_max { first_max = $2 }
        NR > 1 && $1 > half && $2 > second_max { second_max = $2 }
        END { printf "rss_kib max in first half: %d, in second half: %d\n",
                     first_max, second_max }' "$out/rss.csv"
    echo "last run: $(tail -n 1 "$out/bench.jsonl" 2>/dev/null || echo none)"
} | tee "$out/summary.txt"
