#!/usr/bin/env bash
# bench_serving.sh - serving scenarios for `quill serve`, measured with `quill bench-serve`.
#
#   tools/bench_serving.sh MODEL.gguf [OUT_DIR]
#
# Scenarios (each on a fresh server on 127.0.0.1, so no cache carries over):
#   throughput  aggregate output tokens/s at concurrency 1 and 8
#   decode      the same with 256-token outputs, one wave of eight (not in the default list)
#   prefix      TTFT of a 2000-token prompt cold, then with its prefix cached, then four requests
#               with the same new prefix arriving at once
#   stall       inter-token latency of 4 running streams, idle and while a 2000-token prompt
#               arrives
# Env: QUILL=build/quill  THREADS=2  PORT=18200  SCENARIOS="throughput prefix stall"
# Writes one bench-serve JSON object per measurement to OUT_DIR/<scenario>-<case>.json and the
# server logs beside them.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:?usage: bench_serving.sh MODEL.gguf [OUT_DIR]}"
out="${2:-bench-serving-$(date -u +%Y%m%dT%H%M%SZ)}"
quill="${QUILL:-$here/build/quill}"
threads="${THREADS:-2}"
port="${PORT:-18200}"
url="http://127.0.0.1:$port"
scenarios=" ${SCENARIOS:-throughput prefix stall} "
mkdir -p "$out"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT INT TERM

start_server() { # start_server LOG_NAME
    "$quill" serve -m "$model" --host 127.0.0.1 --port "$port" --threads "$threads" \
        --parallel 8 --ctx 4096 >"$out/$1.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
        if curl -fsS --max-time 2 "$url/health" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    echo "bench_serving.sh: the server did not become ready; see $out/$1.log" >&2
    exit 1
}

bench() { # bench NAME bench-serve-options...
    local name="$1"
    shift
    "$quill" bench-serve --url "$url" --json --ignore-eos "$@" >"$out/$name.json"
    echo "$name: $(cat "$out/$name.json")"
}

wants() { # wants SCENARIO: true when SCENARIOS lists it
    [[ "$scenarios" == *" $1 "* ]]
}

# Throughput: the same work one at a time and eight at a time.
if wants throughput; then
start_server throughput
bench throughput-warmup --concurrency 1 --requests 1 --prompt-tokens 32 --max-tokens 8
bench throughput-c1 --concurrency 1 --requests 4 --prompt-tokens 32 --max-tokens 64
bench throughput-c8 --concurrency 8 --requests 16 --prompt-tokens 32 --max-tokens 64
stop_server
fi

# Steady decode: long outputs, so that the prompts' prefill (which grows with the concurrency)
# weighs little next to decoding: one stream, then eight in one wave.
if wants decode; then
start_server decode
bench decode-warmup --concurrency 1 --requests 1 --prompt-tokens 32 --max-tokens 8
bench decode-c1 --concurrency 1 --requests 2 --prompt-tokens 32 --max-tokens 256
bench decode-c8 --concurrency 8 --requests 8 --prompt-tokens 32 --max-tokens 256
stop_server
fi

# Prefix cache: cold, cached, and a burst sharing a prefix not yet computed. bench-serve draws
# the shared prefix from a fixed seed, so every run here shares the same 2000 tokens.
if wants prefix; then
start_server prefix
bench prefix-cold --concurrency 1 --requests 1 --prompt-tokens 2001 --shared-prefix 2000 \
    --max-tokens 1
bench prefix-cached --concurrency 1 --requests 3 --prompt-tokens 2001 --shared-prefix 2000 \
    --max-tokens 1
stop_server
start_server prefix-burst
bench prefix-burst --concurrency 4 --requests 4 --prompt-tokens 2001 --shared-prefix 2000 \
    --max-tokens 1
bench prefix-burst-cached --concurrency 4 --requests 4 --prompt-tokens 2001 --shared-prefix 2000 \
    --max-tokens 1
stop_server
fi

# Stall: four streams alone, then four streams with a 2000-token prompt arriving after 3 s.
if wants stall; then
start_server stall
bench stall-idle --concurrency 4 --requests 4 --prompt-tokens 16 --max-tokens 64
"$quill" bench-serve --url "$url" --json --ignore-eos --concurrency 4 --requests 4 \
    --prompt-tokens 16 --max-tokens 160 >"$out/stall-loaded.json" &
streams_pid=$!
sleep 3
bench stall-long-prompt --concurrency 1 --requests 1 --prompt-tokens 2000 --max-tokens 1
wait "$streams_pid"
echo "stall-loaded: $(cat "$out/stall-loaded.json")"
stop_server
fi
