#!/usr/bin/env bash
# Checks the AArch64 NEON kernel variant on an x86 machine. It cross-builds the kernel, model and
# reference tests for AArch64 as CMake builds them there: the ARMv8.0 base set, with the SDOT
# tiles in their own file. It runs them under qemu-user twice. qemu's default CPU has the
# dot-product extension, so the kernel table takes the SDOT tiles. A Cortex-A53 lacks it, so the
# table keeps the widening-multiply tiles. Then, for every packed type, it compares the logits of
# a tiny model on the packed NEON tiles with those of the reference kernels (check_packed_logits
# below). On AArch64 the NEON variant is the default and the regular suite covers it. Exits 77
# (a skip) when the cross compiler, qemu or the arm64 libraries are missing; .ci/run installs
# them.
# Env: QUILL_SOURCE_DIR (required), QUILL_TEST_TMP_DIR, QUILL_TEST_DATA_DIR.
set -euo pipefail
src="${QUILL_SOURCE_DIR:?QUILL_SOURCE_DIR must name the source folder}"
work="${QUILL_TEST_TMP_DIR:-/tmp}/neon-check"
triple=aarch64-linux-gnu
libdir=/usr/lib/$triple

for tool in "$triple-gcc" "$triple-ar" qemu-aarch64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "skip: $tool is not installed (apt-get install gcc-aarch64-linux-gnu qemu-user)"
        exit 77
    fi
done
for lib in cmocka json-c pcre2-8 utf8proc; do
    if [ ! -e "$libdir/lib$lib.so" ]; then
        echo "skip: no arm64 lib$lib in $libdir (dpkg --add-architecture arm64, then install" \
            "libcmocka-dev:arm64 libjson-c-dev:arm64 libpcre2-dev:arm64 libutf8proc-dev:arm64)"
        exit 77
    fi
done

rm -rf "$work"
mkdir -p "$work/tmp"
flags=(-O2 -std=c11 -Wall -Wextra -Wshadow -Wmissing-prototypes -Wno-unused-parameter -Werror
    -D_GNU_SOURCE -DQUILL_HAVE_NEON=1 -I"$src/include" -I"$src/src" -I"$src/tests/support"
    -I/usr/include/json-c)

# The library without the x86 kernels and the parts these tests do not link (server, CLI,
# downloads), so the check needs no arm64 libcurl or libmicrohttpd.
cd "$src"
sources=$(find src -name '*.c' | grep -v -e '^src/cli/' -e '/avx2/' -e '/avx512/' \
    -e '^src/server/' -e '^src/gguf/hub.c$' | sort)

status=0

# Builds the library and the test programs into $work/build. Files named *_dotprod.c get the
# dot-product extension, as CMakeLists.txt gives them.
out="$work/build"
mkdir -p "$out/obj"
for source in $sources; do
    extra=()
    case "$source" in
    *_dotprod.c) extra=(-march=armv8.2-a+dotprod) ;;
    esac
    "$triple-gcc" "${flags[@]}" "${extra[@]}" -c "$source" \
        -o "$out/obj/$(echo "$source" | tr '/' '_').o"
done
"$triple-ar" rcs "$out/libquill.a" "$out"/obj/*.o
for test in test_kernels_simd test_model test_model_reference; do
    "$triple-gcc" "${flags[@]}" "tests/$test.c" tests/support/test_support.c \
        tests/support/tiny_model.c "$out/libquill.a" -L"$libdir" -lcmocka -ljson-c -lpcre2-8 \
        -lutf8proc -lpthread -lm -o "$out/$test"
done
"$triple-gcc" "${flags[@]}" tests/neon/packed_logits.c tests/support/test_support.c \
    tests/support/tiny_model.c "$out/libquill.a" -L"$libdir" -ljson-c -lpcre2-8 -lutf8proc \
    -lpthread -lm -o "$out/packed_logits"

# Runs the named test programs under qemu with CPU model $1 ("" for qemu's default). Sets
# status to 1 when a test fails.
run_tests() {
    local cpu=$1
    shift
    for test in "$@"; do
        echo "== $test (AArch64 under qemu, CPU ${cpu:-default})"
        local code=0
        # QUILL_KERNELS of the host run (avx2, say) names no AArch64 variant: let NEON be chosen.
        env -u QUILL_KERNELS ${cpu:+QEMU_CPU="$cpu"} QUILL_TEST_TMP_DIR="$work/tmp" \
            qemu-aarch64 -L / "$out/$test" || code=$?
        # 77 is a test's own skip (no data folder); anything else non-zero is a failure.
        if [ "$code" -ne 0 ] && [ "$code" -ne 77 ]; then
            status=1
        fi
    done
}

# Runs an AArch64 program under qemu with QUILL_KERNELS unset, so that NEON is chosen.
run_aarch64() {
    env -u QUILL_KERNELS QUILL_TEST_TMP_DIR="$work/tmp" qemu-aarch64 -L / "$@"
}

# test_model's packed-against-reference tests skip under qemu-user, because they start
# test_model again as a child, which needs binfmt_misc. This runs their comparison from here, for
# every packed type: the logits of the same tiny model (every matrix repacked) from the SDOT
# tiles, from the widening-multiply tiles (Cortex-A53) and from the reference kernels, which
# read the original layout. The two NEON runs must agree bit for bit. The reference run may
# differ by test_model's bound of 0.1, because its float summation order differs. Sets status
# to 1 when a check fails.
check_packed_logits() {
    local models="$work/models"
    mkdir -p "$models"
    echo "== packed NEON logits against the reference kernels (AArch64 under qemu)"
    for type in q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k; do
        local model="$models/$type.gguf"
        local code=0
        run_aarch64 "$out/packed_logits" write "$type" "$model" &&
            QUILL_KERNELS=ref qemu-aarch64 -L / "$out/test_model" --probe-logits "$model" \
                "$models/$type-ref.bin" &&
            run_aarch64 "$out/test_model" --probe-logits "$model" "$models/$type-sdot.bin" &&
            QEMU_CPU=cortex-a53 run_aarch64 "$out/test_model" --probe-logits "$model" \
                "$models/$type-widening.bin" || code=$?
        if [ "$code" -ne 0 ]; then
            echo "FAILED: $type: writing the model or a logits probe exited with $code"
            status=1
            continue
        fi
        if ! cmp -s "$models/$type-sdot.bin" "$models/$type-widening.bin"; then
            echo "FAILED: $type: the SDOT and widening-multiply tiles gave different logits"
            status=1
        fi
        if ! run_aarch64 "$out/packed_logits" compare "$models/$type-ref.bin" \
            "$models/$type-sdot.bin" 0.1; then
            echo "FAILED: $type: packed NEON logits differ from the reference kernels"
            status=1
        fi
    done
}

run_tests "" test_kernels_simd test_model test_model_reference
run_tests cortex-a53 test_kernels_simd test_model
check_packed_logits
exit "$status"
