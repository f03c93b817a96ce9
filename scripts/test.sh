#!/usr/bin/env bash
# The test command of the README: makes sure a Vulkan software device (Mesa lavapipe) is present
# when it can install it, then runs every test of the workspace.
#
# Without an adapter the wgpu tests print "SKIPPED: ..." and pass, unless
# BURN_NATTEN_REQUIRE_WGPU=1 (CI sets it), where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan_driver() {
    ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || ls /etc/vulkan/icd.d/*.json >/dev/null 2>&1
}

if ! have_vulkan_driver; then
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        echo "== installing Mesa lavapipe (mesa-vulkan-drivers) for the wgpu tests"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "== WARNING: no Vulkan driver and no way to install one: the wgpu tests will be SKIPPED"
    fi
fi

# Mesa warns without it; harmless, but noisy.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo test --workspace "$@"
