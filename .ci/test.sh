#!/usr/bin/env bash
# The README's test command. On a fresh Debian (or Ubuntu) machine with only
# Go, it first installs what the tests need and Go does not bring:
#   - Chromium at /usr/bin/chromium: the history page's browser test drives it;
#   - gcc (and the C library headers): the race detector (-race) needs cgo;
#   - ffmpeg: the voice tests convert real AMR with it.
# Then it runs every test with the race detector. Extra arguments go to
# `go test`, e.g. `bash .ci/test.sh -run TestBinary`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} (needed by the tests; apt-get)"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get here: install ${need[*]} yourself (Chromium must be at /usr/bin/chromium), then run: go test -race ./..." >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  apt_log=$(mktemp)
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "installing ${need[*]} failed (see above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi
# Tencent's AI bot SDK proves the fake bot server speaks the real protocol;
# with Node on the machine, install it from the committed lockfile (without
# Node that one test says loudly that it skipped; under CI it fails).
if [ ! -d .ci/aibot-sdk/node_modules ] && command -v npm >/dev/null 2>&1; then
  echo "== npm ci --prefix .ci/aibot-sdk (Tencent's AI bot SDK, for the conformance test)"
  npm ci --prefix .ci/aibot-sdk --no-audit --no-fund >/dev/null
fi
echo "== $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version unknown'); $(gcc --version | head -1)"
# The binary tests build the daemon (without -race) under a 2-minute limit
# each; on a cold build cache, alongside the race builds of every package,
# that first build took longer on a 2-core machine. Build it once first.
echo "== go build (warms the build cache for the binary tests)"
go build -o /dev/null .
exec go test -race -count=1 "$@" ./...
