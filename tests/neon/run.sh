#!/usr/bin/env bash
# Checks the AArch64 NEON kernel variant on an x86 machine: cross-builds the kernel, model and
# reference tests for AArch64 and runs them under qemu-user, once for the ARMv8.0 base set and
# once with the ARMv8.2 dot-product extension (the kernels' two code paths). On AArch64 the
# NEON variant is the default and the regular suite covers it. Exits 77 (a skip) when the cross
# compiler, qemu or the arm64 libraries are missing; .ci/run installs them.
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

# Builds the library into $work/<name> with the extra compiler flags in $2, then builds and runs
# the test programs named after them under qemu. Sets status to 1 when a test fails.
build_and_run() {
    local name=$1
    local march=$2
    shift 2
    local out="$work/$name"
    mkdir -p "$out/obj"
    for source in $sources; do
        "$triple-gcc" "${flags[@]}" ${march:+"$march"} -c "$source" \
            -o "$out/obj/$(echo "$source" | tr '/' '_').o"
    done
    "$triple-ar" rcs "$out/libquill.a" "$out"/obj/*.o

    for test in "$@"; do
        "$triple-gcc" "${flags[@]}" ${march:+"$march"} "tests/$test.c" tests/support/test_support.c \
            tests/support/tiny_model.c "$out/libquill.a" -L"$libdir" -lcmocka -ljson-c \
            -lpcre2-8 -lutf8proc -lpthread -lm -o "$out/$test"
        echo "== $test ($name build, AArch64 under qemu)"
        local code=0
        # QUILL_KERNELS of the host run (avx2, say) names no AArch64 variant: let NEON be chosen.
        env -u QUILL_KERNELS QUILL_TEST_TMP_DIR="$work/tmp" qemu-aarch64 -L / "$out/$test" ||
            code=$?
        # 77 is a test's own skip (no data folder); anything else non-zero is a failure.
        if [ "$code" -ne 0 ] && [ "$code" -ne 77 ]; then
            status=1
        fi
    done
}

# The ARMv8.0 base set: the NEON kernels' widening-multiply paths.
build_and_run armv8.0 "" test_kernels_simd test_model test_model_reference
# ARMv8.2 with the dot-product extension, which qemu-user emulates: the SDOT paths of the
# packed tiles.
build_and_run armv8.2-dotprod "-march=armv8.2-a+dotprod" test_kernels_simd test_model
exit "$status"
