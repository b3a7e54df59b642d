#!/usr/bin/env bash
# Builds the libFuzzer targets, replays every saved regression input, then
# fuzzes each target for a bounded time. Exits non-zero on any finding.
#
# Usage: fuzz/run.sh [seconds-per-target] [target...]
#   seconds   how long each target fuzzes (default 60; 0 = replay only)
#   targets   resp binary wal-record config (default: all four)
#
# The decoders are built by SwiftPM (release, AddressSanitizer, libFuzzer's
# coverage instrumentation, -enable-testing so the harnesses reach internal
# entry points) in .build-fuzz; each harness in fuzz/ is then linked against
# those objects. A crash input is copied to fuzz/regressions/<target>/ and
# replayed by every later run: commit it with the fix. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
# Swift's own crash backtracer would read freed memory of the dying process
# and trip AddressSanitizer; libFuzzer's report names the input and the stack.
export SWIFT_BACKTRACE=enable=no

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(resp binary wal-record config)

scratch=.build-fuzz
swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -enable-testing \
    --target AegisServer --scratch-path "$scratch"
release="$(swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -enable-testing \
    --scratch-path "$scratch" --show-bin-path)"

# Every module the AegisServer target depends on, without the copies built
# for package plugins (*-tool.build), which would define the same symbols.
objects=()
while IFS= read -r -d '' object; do objects+=("$object"); done < <(
    find "$release" -path '*-tool.build' -prune -o -path '*.build/*' -name '*.o' -print0)

harness_source() {
    case "$1" in
        resp) echo fuzz/RESPFuzz.swift ;;
        binary) echo fuzz/BinaryFuzz.swift ;;
        wal-record) echo fuzz/WALRecordFuzz.swift ;;
        config) echo fuzz/ConfigFuzz.swift ;;
        *) echo "fuzz/run.sh: unknown target $1 (resp, binary, wal-record, config)" >&2; exit 2 ;;
    esac
}

# The config keys, as libFuzzer dictionary entries: mutations then build
# members the loader knows instead of hoping to spell a key by chance.
write_config_dictionary() {
    {
        grep -o '^| `[a-z_]*`' docs/configuration.md | tr -d '|` ' | sed 's/.*/"\\"&\\""/'
        printf '"%s"\n' '{' '}' '[' ']' ':' ',' 'true' 'false' 'null' '\"' '\\u00' '\"30s\"' '\"100ms\"' '0.5' '1e3'
    } > "$1"
}

status=0
for target in "${targets[@]}"; do
    source="$(harness_source "$target")"
    binary="$scratch/fuzzers/$target"
    mkdir -p "$scratch/fuzzers" "$scratch/corpus/$target" "$scratch/artifacts/$target" "$scratch/logs" \
        "fuzz/corpus/$target" "fuzz/regressions/$target"
    # CSupport's objects include the OpenSSL binding (tls.c): link its libraries.
    swiftc -sanitize=fuzzer,address -parse-as-library -O -swift-version 6 -enable-testing \
        -module-name "FuzzTarget" -I "$release/Modules" \
        -Xcc -fmodule-map-file="$release/CSupport.build/module.modulemap" -Xcc -ICSupport/include \
        "$source" fuzz/FuzzSupport.swift "${objects[@]}" -luring -lssl -lcrypto -use-ld=lld -o "$binary"

    options=(-timeout=10 -max_len=4096 -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target/")
    if [ "$target" = config ]; then
        write_config_dictionary "$scratch/config.dict"
        options+=(-dict="$scratch/config.dict")
    fi

    regressions=()
    while IFS= read -r -d '' file; do regressions+=("$file"); done < <(
        find "fuzz/regressions/$target" -type f ! -name '.*' -print0 | sort -z)
    if [ ${#regressions[@]} -gt 0 ]; then
        echo "fuzz $target: replaying ${#regressions[@]} regression input(s)"
        if ! "$binary" "${options[@]}" "${regressions[@]}" > "$scratch/logs/$target-regressions.log" 2>&1; then
            tail -n 60 "$scratch/logs/$target-regressions.log"
            echo "fuzz $target: a regression input fails again (log: $scratch/logs/$target-regressions.log)" >&2
            status=1
            continue
        fi
    fi
    [ "$seconds" -gt 0 ] || continue

    echo "fuzz $target: fuzzing for ${seconds}s"
    rm -f "$scratch/artifacts/$target/"*
    # New inputs go to the scratch corpus; the committed seeds stay as they are.
    if "$binary" "${options[@]}" -max_total_time="$seconds" \
        "$scratch/corpus/$target" "fuzz/corpus/$target" "fuzz/regressions/$target" > "$scratch/logs/$target.log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added):' "$scratch/logs/$target.log" | tr '\n' ' '
        echo
    else
        tail -n 60 "$scratch/logs/$target.log"
        for crash in "$scratch/artifacts/$target/"*; do
            [ -e "$crash" ] || continue
            cp "$crash" "fuzz/regressions/$target/"
            echo "fuzz $target: finding kept as fuzz/regressions/$target/$(basename "$crash"): fix it, then commit the file" >&2
        done
        echo "fuzz $target: FAILED (log: $scratch/logs/$target.log)" >&2
        status=1
    fi
done
exit "$status"
