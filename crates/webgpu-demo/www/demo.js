// The page's logic: picks or generates an image, calls the wasm module (pkg/, built by
// scripts/build-webgpu-demo.sh), draws the image and the clicked pixel's heat map, and writes
// every outcome as JSON into <pre id="result"> (the end-to-end test reads it).
import init, { init_webgpu, generated_image, run_na2d } from './pkg/webgpu_demo.js';

const $ = (id) => document.getElementById(id);
const state = { image: null, run: null, adapter: null, seq: 0, lastWeights: null };
// For the end-to-end test: the last heat map (Float32Array) and the image's size.
window.demoState = state;

function report(status, extra = {}) {
  state.seq += 1;
  const result = { status, seq: state.seq, adapter: state.adapter, ...extra };
  $('result').textContent = JSON.stringify(result, null, 1);
}

function showError(message) {
  $('error').textContent = message;
  report('error', { error: message });
}

function clearError() { $('error').textContent = ''; }

// ---- the image -------------------------------------------------------------------------
function setImage(rgba, width, height) {
  state.image = { rgba, width, height };
  state.run = null;
  state.lastWeights = null;
  for (const id of ['image', 'heat']) { $(id).width = width; $(id).height = height; }
  drawImage($('image'), 1.0);
  drawImage($('heat'), 0.35);
  $('summary').innerHTML = '';
}

function drawImage(canvas, brightness) {
  const { rgba, width, height } = state.image;
  const data = new Uint8ClampedArray(rgba);
  if (brightness !== 1.0) {
    for (let i = 0; i < data.length; i += 4) {
      for (let c = 0; c < 3; c++) data[i + c] = data[i + c] * brightness;
    }
  }
  canvas.getContext('2d', { willReadFrequently: true }).putImageData(new ImageData(data, width, height), 0, 0);
}

function useGenerated() {
  const side = Number($('size').value);
  const width = side, height = Math.round(side * 3 / 4);
  setImage(generated_image(width, height), width, height);
}

async function useFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    throw new Error(`cannot read "${file.name}" as an image (${e.message || e})`);
  }
  const side = Number($('size').value);
  const scale = side / Math.max(bitmap.width, bitmap.height);
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0, width, height);
  setImage(new Uint8Array(ctx.getImageData(0, 0, width, height).data.buffer), width, height);
}

// ---- running NA ------------------------------------------------------------------------
function intField(id) {
  const text = $(id).value.trim();
  if (!/^\d+$/.test(text)) throw new Error(`${id} must be a whole number, got "${text}"`);
  return Number(text);
}

async function runNa() {
  clearError();
  if (!state.image) useGenerated();
  const kernel = intField('kernel'), dilation = intField('dilation'), warm = intField('warm');
  const { rgba, width, height } = state.image;
  $('run').disabled = true;
  report('running');
  try {
    if (state.run) { state.run.free(); state.run = null; }
    state.run = await run_na2d(rgba, width, height, kernel, dilation, $('path').value, warm);
    const summary = JSON.parse(state.run.summary_json());
    showSummary(summary);
    // Start with the centre pixel's heat map.
    clickPixel(Math.floor(width / 2), Math.floor(height / 2));
  } finally {
    $('run').disabled = false;
  }
}

function showSummary(s) {
  const ms = (t) => `${t.toFixed(1)} ms`;
  const auto = s.auto.fused
    ? `fused CubeCL kernels: ${s.auto.tile_configs} tile configurations fit this adapter's ` +
      `${state.adapter?.wgpu?.max_compute_workgroup_storage_size ?? '?'}-byte workgroup ` +
      `storage (blocks of ${s.auto.block[0]} queries x ${s.auto.block[1]} keys)`
    : 'reference: no block size of the fused kernels fits this adapter\'s workgroup storage';
  const rows = [
    ['problem', `${s.width} x ${s.height} tokens, ${s.heads} heads, head dim ${s.head_dim}, ` +
                `kernel ${s.kernel} x ${s.kernel}, dilation ${s.dilation}, f32`],
    ['path that ran', `${s.path} (asked: ${s.requested})`],
    ['auto chooses', auto],
    ['WebGPU time', `${ms(s.median_ms)} median of ${s.warm_ms.length} runs ` +
                    `(forward + read-back); first run ${ms(s.first_ms)} (includes shader compilation)`],
    ['reference (NdArray, wasm)', ms(s.reference_ms)],
    ['max |WebGPU - reference|', `${s.max_abs_diff.toExponential(2)} ` +
                                 `(outputs up to ${s.max_abs_reference.toFixed(2)})`],
  ];
  $('summary').innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('');
  state.summary = s;
}

// ---- the heat map ----------------------------------------------------------------------
function heatColour(t) {
  // black -> red -> yellow -> white
  const r = Math.min(1, 3 * t), g = Math.min(1, Math.max(0, 3 * t - 1)), b = Math.max(0, 3 * t - 2);
  return [255 * r, 255 * g, 255 * b];
}

function clickPixel(x, y) {
  if (!state.run) { showError('run the attention first (Run)'); return; }
  const head = Number($('head').value);
  const weights = state.run.weights(x, y, head);
  const pixel = JSON.parse(state.run.pixel_json(x, y, head));
  state.lastWeights = weights;
  state.lastPixel = [x, y];
  const { width, height } = state.image;
  drawImage($('heat'), 0.35);
  const ctx = $('heat').getContext('2d', { willReadFrequently: true });
  const img = ctx.getImageData(0, 0, width, height);
  const max = pixel.max_weight;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] === 0) continue;
    const [r, g, b] = heatColour(0.2 + 0.8 * weights[i] / max);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  // Mark the query on the input image.
  drawImage($('image'), 1.0);
  const ictx = $('image').getContext('2d', { willReadFrequently: true });
  ictx.fillStyle = '#00e5ff';
  ictx.fillRect(x, y, 1, 1);
  $('heat-caption').textContent =
    `attention weights of pixel (${x}, ${y}), head ${head}: ${pixel.nonzero} neighbours, ` +
    `sum ${pixel.weight_sum.toFixed(6)}, largest ${pixel.max_weight.toFixed(3)}`;
  report('ok', { summary: state.summary, pixel });
}

function canvasPixel(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * canvas.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * canvas.height);
  return [Math.min(Math.max(x, 0), canvas.width - 1), Math.min(Math.max(y, 0), canvas.height - 1)];
}

// ---- wiring ----------------------------------------------------------------------------
const guard = (f) => async (...args) => {
  try { clearError(); await f(...args); } catch (e) { showError(e.message || String(e)); }
};

async function main() {
  await init();
  if (!('gpu' in navigator)) {
    throw new Error('this browser has no WebGPU (navigator.gpu is missing; in Chromium: ' +
                    '--enable-unsafe-webgpu, and serve the page from localhost or https)');
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('WebGPU has no adapter (navigator.gpu.requestAdapter() returned null)');
  const info = adapter.info || {};
  const browser = {
    vendor: info.vendor, architecture: info.architecture, device: info.device,
    description: info.description, is_fallback_adapter: adapter.isFallbackAdapter ?? info.isFallbackAdapter,
    max_compute_workgroup_storage_size: adapter.limits.maxComputeWorkgroupStorageSize,
  };
  const wgpu = JSON.parse(await init_webgpu());
  state.adapter = { browser, wgpu };
  $('adapter').textContent =
    `WebGPU adapter: ${[info.vendor, info.architecture, info.description].filter(Boolean).join(' / ') || wgpu.name}` +
    (browser.is_fallback_adapter ? ' (software fallback adapter: runs on the CPU)' : '') +
    `; workgroup storage ${browser.max_compute_workgroup_storage_size} bytes`;
  $('run').disabled = false;
  useGenerated();
  report('ready');
}

$('generated').addEventListener('click', guard(async () => { useGenerated(); report('ready'); }));
$('file').addEventListener('change', guard(async (e) => {
  if (e.target.files.length) { await useFile(e.target.files[0]); report('ready'); }
}));
$('size').addEventListener('change', guard(async () => {
  const files = $('file').files;
  if (files.length) await useFile(files[0]); else useGenerated();
  report('ready');
}));
$('run').addEventListener('click', guard(runNa));
for (const id of ['image', 'heat']) {
  $(id).addEventListener('click', guard(async (e) => clickPixel(...canvasPixel($(id), e))));
}
$('head').addEventListener('change', guard(async () => {
  if (state.run && state.lastPixel) clickPixel(...state.lastPixel);
}));

main().catch((e) => {
  $('adapter').textContent = 'WebGPU: unavailable';
  showError(e.message || String(e));
});
