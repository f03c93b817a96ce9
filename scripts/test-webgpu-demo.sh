#!/usr/bin/env bash
# End-to-end test of the WebGPU demo: builds it (scripts/build-webgpu-demo.sh), serves
# crates/webgpu-demo/www on localhost, and drives the page in headless Chromium with WebGPU on
# Chromium's software adapter (crates/webgpu-demo/e2e.mjs, playwright-core).
#
#   bash scripts/test-webgpu-demo.sh [--screenshot]   # --screenshot: book/src/pictures/webgpu-demo.png
#
# Installs Chromium with apt when it is missing. When it cannot (no apt, no root), it prints
# "SKIPPED: ..." and exits 0. When Chromium is there but WebGPU has no adapter, the test FAILS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo=crates/webgpu-demo

screenshot_args=()
for arg in "$@"; do
    case "$arg" in
        --screenshot) screenshot_args=(--screenshot "$root/book/src/pictures/webgpu-demo.png") ;;
        *) echo "usage: $0 [--screenshot]" >&2; exit 2 ;;
    esac
done

chromium_bin=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        echo "== installing Chromium (apt) for the WebGPU demo test"
        # (A first install has been seen to fail unpacking an archive; a second try succeeded.)
        install() { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }
        install || install || true
    fi
fi
if [ ! -x "$chromium_bin" ]; then
    echo "=================================================================================="
    echo "SKIPPED: the WebGPU demo test: no Chromium at $chromium_bin, and apt could not install it"
    echo "=================================================================================="
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "test-webgpu-demo: Chromium is present but node/npm are not" >&2
    exit 1
fi

bash scripts/build-webgpu-demo.sh
(cd "$demo" && npm ci --no-audit --no-fund --loglevel=error)

# Serve the page on a free localhost port (localhost is a secure context: WebGPU is allowed).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$demo/www" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1])" \
        "http://127.0.0.1:$port/index.html" >/dev/null 2>&1 && break
    sleep 0.1
done

start=$(date +%s)
node "$demo/e2e.mjs" --url "http://127.0.0.1:$port/index.html" --chromium "$chromium_bin" \
    "${screenshot_args[@]}"
echo "== WebGPU demo test took $(( $(date +%s) - start )) s in the browser"
