#!/usr/bin/env bash
# Builds the WebGPU browser demo: crates/webgpu-demo compiled to wasm32 (release) and wrapped by
# wasm-bindgen (--target web) into crates/webgpu-demo/www/pkg/ (git-ignored), next to the page.
# Installs the wasm32 target and wasm-bindgen-cli (the version of the wasm-bindgen crate in
# Cargo.lock) when they are missing. Serve crates/webgpu-demo/www/ on localhost afterwards, e.g.
#   python3 -m http.server 8000 --bind 127.0.0.1 --directory crates/webgpu-demo/www
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

target_dir="${CARGO_TARGET_DIR:-target}"
www=crates/webgpu-demo/www

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen's CLI must be exactly the crate's version.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)
if [ -z "$version" ]; then
    echo "build-webgpu-demo: no wasm-bindgen in Cargo.lock" >&2
    exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "== installing wasm-bindgen-cli $version"
    # --locked first; its lock file can name versions a registry mirror lacks, then resolve anew.
    cargo install wasm-bindgen-cli --version "$version" --locked \
        || cargo install wasm-bindgen-cli --version "$version"
fi

echo "== building crates/webgpu-demo for wasm32 (release)"
# Not stripped: wasm-bindgen reads the module's `target_features` section (the workspace's
# release profile strips host binaries).
CARGO_PROFILE_RELEASE_STRIP=false cargo build -p webgpu-demo --target wasm32-unknown-unknown --release
rm -rf "$www/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$www/pkg" \
    "$target_dir/wasm32-unknown-unknown/release/webgpu_demo.wasm"
echo "== built $www/pkg ($(du -sh "$www/pkg" | cut -f1))"
