#!/usr/bin/env bash
# Builds the libFuzzer harness for AegisProtocol and runs it for a bounded time.
# Usage: fuzz/run.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build-fuzz
mkdir -p "$out" "$out/corpus"
swiftc -sanitize=fuzzer,address -parse-as-library -O -swift-version 6 \
    -module-name ProtocolFuzz \
    fuzz/ProtocolFuzz.swift Sources/AegisProtocol/*.swift \
    -o "$out/protocol-fuzz"
# New inputs go to the scratch corpus; the seeds in fuzz/corpus stay as committed.
"$out/protocol-fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    "$out/corpus" fuzz/corpus/resp-request fuzz/corpus/binary-request
