#!/bin/sh
# Runs the end-to-end tests of `quill serve` with Node's test runner, or skips (exit code 77)
# when Node or the OpenAI SDK (npm ci in this folder) is missing.
# usage: run.sh QUILL_BINARY MODEL_WRITER_BINARY
here=$(dirname "$0")
if ! command -v node >/dev/null 2>&1; then
    echo "skip: node is not installed"
    exit 77
fi
if [ ! -d "$here/node_modules/openai" ]; then
    echo "skip: the OpenAI SDK is not installed; run 'npm ci' in $here"
    exit 77
fi
QUILL_BINARY="$1" QUILL_MODEL_WRITER="$2" exec node --test "$here/openai_sdk.test.mjs"
