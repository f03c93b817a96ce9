#!/usr/bin/env bash
# Runs on the GPU machine (see DEVELOPERS.md): the CUDA test binary and the anchor benchmarks of
# natten-profile, beside NATTEN's Flex backend and PyTorch SDPA from ../shared/tools.
# Expects .dev/bin/{integration,natten-profile} and .dev/tools/ (carried), writes logs to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export BURN_NATTEN_GOLDEN_DIR=tests/golden BURN_NATTEN_REQUIRE_WGPU=1 PYTHONUNBUFFERED=1
# Binaries travel xz-compressed (the carried tree is limited to 64 MiB).
python3 -c 'import glob, lzma, os
for f in glob.glob(".dev/bin/*.xz"):
    open(f[:-3], "wb").write(lzma.open(f).read()); os.chmod(f[:-3], 0o755)' 
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== CUDA integration tests"
  timeout 420 .dev/bin/integration 2>&1 | grep -v "^$" | tail -40 | tee "$OUT/tests.log"
fi

echo "== natten-profile (burn-natten, Cuda backend, bf16, head dim 128)"
prof() { timeout 120 .dev/bin/natten-profile --backend cuda --dtype bf16 --dim 128 --heads 16 --warmup 2 --iters 5 --json "$@"; }
{
  prof -i 32768 -w 2048 --backprop
  prof -i 128 128 -w 31 31 --backprop
  prof -i 16 44 80 -w 8 16 24 --backprop
  prof -i 256 256 -w 63 63
} > "$OUT/profile.json" 2> "$OUT/profile.err"
python3 - "$OUT/profile.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec, i, rows = json.JSONDecoder(), 0, []
while i < len(text):
    text_i = text[i:].lstrip()
    if not text_i: break
    obj, n = dec.raw_decode(text_i); rows.append(obj); i = len(text) - len(text_i) + n
for r in rows:
    t = r["timing"]
    print(f"burn-natten {str(r['input_size']):18} w{str(r['window_size']):14} fwd {t['forward_ms']:9.2f} ms {r['forward_tflops']:7.2f} TF/s"
          + (f" | fwd+bwd {t['forward_backward_ms']:9.2f} ms {r['forward_backward_tflops']:7.2f} TF/s" if t['forward_backward_ms'] else ""))
PY
tail -3 "$OUT/profile.err"

if [ "${SKIP_PEERS:-0}" != 1 ]; then
  echo "== peers (NATTEN flex, SDPA) from the same session"
  mkdir -p /tmp/natten && tar xzf .dev/tools/natten-0.21.7-python.tar.gz -C /tmp/natten
  export NATTEN_SRC=/tmp/natten/natten-0.21.7
  for c in na1d-32k-w2048 na2d-128x128-w31 na3d-16x44x80-w8x16x24 na2d-256x256-w63; do
    timeout 240 python3 .dev/tools/flex_anchor.py fwd "$c" 2>/dev/null | grep -v '^{' | tail -8 >> "$OUT/peers.txt"
  done
  timeout 240 python3 .dev/tools/flex_anchor.py bwd na1d-32k-w2048 2>/dev/null | grep -v '^{' | tail -8 >> "$OUT/peers.txt"
  cat "$OUT/peers.txt"
fi
