#!/usr/bin/env bash
# Builds the handshake litmus with -O from the ring and interconnect of a
# revision (default: the working tree) and runs it.
#   perf/handshake-litmus/run.sh [--rev REV] [crossings] [jitter] [seed]
# Example, before and after the fence (issue 14, item 1):
#   perf/handshake-litmus/run.sh --rev 37c2ecf 1000000 16 3
#   perf/handshake-litmus/run.sh 1000000 16 3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
rev=""
if [[ "${1:-}" == "--rev" ]]; then rev="$2"; shift 2; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/inc"
cp "$repo/CSupport/include/CSupport.h" "$work/inc/"
printf 'module CSupport {\n  header "CSupport.h"\n  export *\n}\n' > "$work/inc/module.modulemap"
for source in SPSCByteRing.swift Interconnect.swift OwnerThread.swift; do
    if [[ -n "$rev" ]] && git -C "$repo" cat-file -e "$rev:Sources/AegisServer/$source" 2>/dev/null; then
        git -C "$repo" show "$rev:Sources/AegisServer/$source" > "$work/$source"
    elif [[ -z "$rev" || "$source" != OwnerThread.swift ]]; then
        cp "$repo/Sources/AegisServer/$source" "$work/$source"
    fi
done
if [[ -n "$rev" ]] && ! grep -q OwnerThread "$work/SPSCByteRing.swift"; then rm -f "$work/OwnerThread.swift"; fi
for c in eventfd epoll; do clang -O2 -c -I "$work/inc" "$repo/CSupport/$c.c" -o "$work/$c.o"; done
swiftc -O -module-name Litmus -parse-as-library -I "$work/inc" "$here/main.swift" "$work"/*.swift "$work/eventfd.o" "$work/epoll.o" -o "$work/litmus"
"$work/litmus" "$@"
