// End-to-end test of the WebGPU demo (run by scripts/test-webgpu-demo.sh, which builds the page
// and serves it): opens the page in headless Chromium with WebGPU, runs NA through the page's
// controls, clicks pixels and checks what the page reports against independent expectations.
//
//   node e2e.mjs --url http://127.0.0.1:PORT/index.html [--chromium /usr/bin/chromium]
//                [--screenshot book/src/pictures/webgpu-demo.png]
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const url = opt('--url');
const executablePath = opt('--chromium', '/usr/bin/chromium');
const screenshot = opt('--screenshot', null);
if (!url) throw new Error('usage: node e2e.mjs --url URL [--chromium PATH] [--screenshot PNG]');

// Tolerance of max |WebGPU - reference| (absolute, f32). Every output is a convex combination of
// at most kernel^2 <= 169 rows of V with |V| <= sqrt(13) ~ 3.6 (by construction, see
// crates/webgpu-demo/src/scene.rs). Summing n terms in f32 in another order changes the result by
// at most ~n * 2^-24 * 3.6 (= 3.6e-5 for n = 169); WGSL's exp may be off by 3 + 2|x| ulp, a
// relative error below 1e-5 in every weight for the scores here, so below 3.6e-5 in the output.
// 1e-4 bounds both with margin; a wrong neighbourhood or a wrong softmax moves outputs by O(0.1).
const TOLERANCE = 1e-4;

// Chromium flags: the machine's known-good headless set, plus WebGPU on Chromium's bundled
// software adapter (SwiftShader; Chromium never uses Mesa's lavapipe).
const FLAGS = [
  '--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader',
];

const failures = [];
function check(ok, message) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${message}`);
  if (!ok) failures.push(message);
}

// NATTEN's window on one axis (stride 1, not causal), written from the design's rule
// independently of natten-core: the global coordinates a query at x sees.
function axisKeys(len, kernel, dilation, x) {
  const g = x % dilation, i = Math.floor(x / dilation);
  const groupLen = Math.ceil((len - g) / dilation);
  const leader = Math.min(i, groupLen - 1);
  const start = Math.min(Math.max(leader - Math.floor(kernel / 2), 0), groupLen - kernel);
  return Array.from({ length: kernel }, (_, j) => g + dilation * (start + j));
}

const browser = await chromium.launch({ executablePath, headless: true, args: FLAGS });
const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
const consoleLines = [];
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

const result = async () => JSON.parse(await page.$eval('#result', (e) => e.textContent));

// Waits for the page's next outcome (a higher seq than `after`) whose status is in `statuses`.
async function nextResult(after, statuses, timeout = 180000) {
  await page.waitForFunction(([after, statuses]) => {
    try {
      const r = JSON.parse(document.getElementById('result').textContent);
      return r.seq > after && statuses.includes(r.status);
    } catch { return false; }
  }, [after, statuses], { timeout, polling: 100 });
  return result();
}

async function clickPixel(x, y) {
  const canvas = page.locator('#image');
  const [w, h] = await canvas.evaluate((c) => [c.width, c.height]);
  const box = await canvas.boundingBox();
  await page.mouse.click(box.x + (x + 0.5) / w * box.width, box.y + (y + 0.5) / h * box.height);
}

async function runCase({ size, kernel, dilation, path, warm, click }) {
  const name = `size ${size}, kernel ${kernel}, dilation ${dilation}, ${path}`;
  await page.selectOption('#size', String(size));
  await page.click('#generated');
  await page.fill('#kernel', String(kernel));
  await page.fill('#dilation', String(dilation));
  await page.fill('#warm', String(warm));
  await page.selectOption('#path', path);
  const before = (await result()).seq;
  const started = Date.now();
  await page.click('#run');
  let r = await nextResult(before, ['ok', 'error']);
  check(r.status === 'ok', `[${name}] ran (${Date.now() - started} ms)${r.error ? ': ' + r.error : ''}`);
  if (r.status !== 'ok') return null;
  const s = r.summary;
  console.log(`     path: ${s.path}; auto: ${JSON.stringify(s.auto)}`);
  console.log(`     WebGPU: first ${s.first_ms.toFixed(1)} ms, median ${s.median_ms.toFixed(1)} ms ` +
              `of ${s.warm_ms.length} [${s.warm_ms.map((t) => t.toFixed(1)).join(', ')}]; ` +
              `reference (NdArray, wasm) ${s.reference_ms.toFixed(1)} ms`);
  check(s.max_abs_diff < TOLERANCE,
        `[${name}] max |WebGPU - reference| = ${s.max_abs_diff.toExponential(3)} < ${TOLERANCE} ` +
        `(outputs up to ${s.max_abs_reference.toFixed(3)})`);
  check(s.max_abs_reference > 0.1, `[${name}] the reference output is not trivial`);
  check(s.kernel === kernel && s.dilation === dilation, `[${name}] the page ran the asked window`);
  const expectedPath = path === 'reference' || !s.auto.fused ? 'reference (Burn tensor ops)' : 'fused CubeCL kernels';
  check(s.path === expectedPath, `[${name}] path "${s.path}"`);
  check(Number.isFinite(s.median_ms) && s.median_ms > 0 && s.warm_ms.length === warm &&
        s.warm_ms.every((t) => t > 0) && s.first_ms > 0, `[${name}] timing reported`);

  const [x, y] = click;
  const seq = r.seq;
  await clickPixel(x, y);
  r = await nextResult(seq, ['ok', 'error'], 30000);
  check(r.status === 'ok' && r.pixel.x === x && r.pixel.y === y,
        `[${name}] clicked pixel (${x}, ${y}) reported${r.error ? ': ' + r.error : ''}`);
  if (r.status !== 'ok') return null;
  const weights = await page.evaluate(() => Array.from(window.demoState.lastWeights));
  const [w, h] = [s.width, s.height];
  const rows = axisKeys(h, kernel, dilation, y), cols = axisKeys(w, kernel, dilation, x);
  const neighbourhood = new Set(rows.flatMap((r) => cols.map((c) => r * w + c)));
  const sum = weights.reduce((a, b) => a + b, 0);
  const outside = weights.filter((v, i) => !neighbourhood.has(i) && v !== 0).length;
  const inside = [...neighbourhood].filter((i) => weights[i] > 0).length;
  check(weights.length === w * h, `[${name}] heat map has ${weights.length} = ${w} x ${h} entries`);
  check(Math.abs(sum - 1) < 1e-5, `[${name}] heat-map weights sum to ${sum.toFixed(7)}`);
  check(outside === 0 && inside === kernel * kernel,
        `[${name}] weights are > 0 on the ${kernel}x${kernel} window (${inside}) and 0 outside (${outside} non-zero)`);
  check(r.pixel.output_diff < TOLERANCE,
        `[${name}] heat map applied to V matches the WebGPU output: ${r.pixel.output_diff.toExponential(3)}`);
  return r;
}

let code = 1;
try {
  await page.goto(url);
  const ready = await nextResult(0, ['ready', 'error'], 60000);
  check(ready.status === 'ready', `page ready: ${ready.error ?? 'WebGPU initialised'}`);
  const adapter = ready.adapter;
  check(adapter?.browser && adapter?.wgpu, 'WebGPU adapter present');
  if (adapter) {
    const b = adapter.browser;
    console.log(`     adapter (browser): vendor=${b.vendor} architecture=${b.architecture} ` +
                `description="${b.description}" fallback=${b.is_fallback_adapter} ` +
                `workgroup storage=${b.max_compute_workgroup_storage_size} B`);
    console.log(`     adapter (wgpu): ${JSON.stringify(adapter.wgpu)}`);
  }
  if (ready.status === 'ready') {
    const a = await runCase({ size: 64, kernel: 13, dilation: 1, path: 'auto', warm: 5, click: [33, 18] });
    if (a && screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
      console.log(`     screenshot: ${screenshot}`);
    }
    await runCase({ size: 48, kernel: 5, dilation: 3, path: 'auto', warm: 3, click: [47, 35] });
    await runCase({ size: 48, kernel: 5, dilation: 3, path: 'reference', warm: 2, click: [1, 17] });

    // Bad input: an error on the page, not a panic; the page still works afterwards.
    await page.selectOption('#size', '32');
    await page.click('#generated');
    await page.fill('#kernel', '30');
    await page.fill('#dilation', '1');
    let seq = (await result()).seq;
    await page.click('#run');
    let r = await nextResult(seq, ['ok', 'error']);
    const shown = await page.$eval('#error', (e) => e.textContent);
    check(r.status === 'error' && /kernel size x dilation/.test(r.error) && shown === r.error,
          `kernel 30 on a 32 x 24 image is an error on the page: "${r.error}"`);
    await page.fill('#kernel', '');
    seq = r.seq;
    await page.click('#run');
    r = await nextResult(seq, ['ok', 'error']);
    check(r.status === 'error' && /whole number/.test(r.error), `an empty kernel size is an error: "${r.error}"`);
    await page.fill('#kernel', '3');
    seq = r.seq;
    await page.click('#run');
    r = await nextResult(seq, ['ok', 'error']);
    check(r.status === 'ok' && r.summary.max_abs_diff < TOLERANCE, 'the page runs again after the errors');
  }
  code = failures.length ? 1 : 0;
} catch (e) {
  console.log(`FAIL ${e.stack || e}`);
} finally {
  if (code !== 0) {
    console.log('--- page result ---');
    try { console.log(JSON.stringify(await result())); } catch { /* page gone */ }
  }
  const noisy = consoleLines.filter((l) => !l.startsWith('log:'));
  if (noisy.length) console.log('--- browser console ---\n' + noisy.slice(0, 40).join('\n'));
  await browser.close();
}
console.log(code === 0 ? 'webgpu demo e2e: PASSED' : `webgpu demo e2e: FAILED (${failures.length} checks)`);
process.exit(code);
