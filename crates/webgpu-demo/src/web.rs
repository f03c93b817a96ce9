//! The browser bindings (wasm32 only): what `www/demo.js` calls through wasm-bindgen.
//!
//! Errors reach JavaScript as `Error` objects with the message the page shows; nothing here
//! panics on input from the page. A panic (a bug) is logged to the console by the hook that
//! [`start`] installs.

use std::cell::RefCell;

use burn::backend::wgpu::graphics::WebGpu;
use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, init_setup_async};
use burn::backend::{NdArray, Wgpu};
use wasm_bindgen::prelude::*;

use crate::DemoError;
use crate::run::{Demo, NaBackend};
use crate::scene::{Image, Qkv};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

thread_local! {
    /// The adapter description of the initialised WebGPU device (JSON), once [`init_webgpu`]
    /// has run.
    static ADAPTER: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that logs panics to the browser console (runs when the module loads).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("webgpu-demo panicked: {info}"))
    }));
}

fn js_error(e: DemoError) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// Initialises Burn's `Wgpu` backend on the browser's WebGPU (its default device) and returns
/// the adapter as wgpu sees it, as JSON (name, vendor, backend, the workgroup storage limit).
/// Later calls return the same description. The page calls it only after
/// `navigator.gpu.requestAdapter()` returned an adapter (wgpu cannot report a missing one
/// without panicking).
#[wasm_bindgen]
pub async fn init_webgpu() -> String {
    if let Some(json) = ADAPTER.with(|a| a.borrow().clone()) {
        return json;
    }
    let setup = init_setup_async::<WebGpu>(&WgpuDevice::default(), RuntimeOptions::default()).await;
    let info = setup.adapter.get_info();
    let limits = setup.device.limits();
    let json = serde_json::json!({
        "name": info.name,
        "vendor": info.vendor,
        "device": info.device,
        "device_type": format!("{:?}", info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "backend": format!("{:?}", info.backend),
        "max_compute_workgroup_storage_size": limits.max_compute_workgroup_storage_size,
    })
    .to_string();
    ADAPTER.with(|a| *a.borrow_mut() = Some(json.clone()));
    json
}

/// The demo's generated picture, `width x height` RGBA bytes.
///
/// # Errors
/// An `Error` for a side of 0 or above the demo's limit.
#[wasm_bindgen]
pub fn generated_image(width: u32, height: u32) -> Result<Vec<u8>, JsValue> {
    Image::generated(width as usize, height as usize)
        .map(|i| i.rgba)
        .map_err(js_error)
}

/// Runs 2-D NA on the image `rgba` (`width x height`, RGBA bytes) with window `kernel` and
/// dilation `dilation`: on WebGPU with `path` (`"auto"`: the library's choice, or
/// `"reference"`: the reference path on WebGPU), one first call and `warm` timed calls (at most
/// 50), then once on NdArray (the reference, on the CPU) for the comparison.
///
/// # Errors
/// An `Error` naming the problem for a bad image, a window that NATTEN's rules reject (e.g.
/// kernel size x dilation larger than a side), an unknown path, a call before
/// [`init_webgpu`], or a failed read-back.
#[wasm_bindgen]
pub async fn run_na2d(
    rgba: Vec<u8>,
    width: u32,
    height: u32,
    kernel: u32,
    dilation: u32,
    path: String,
    warm: u32,
) -> Result<DemoRun, JsValue> {
    if ADAPTER.with(|a| a.borrow().is_none()) {
        return Err(js_error(DemoError::Input(
            "WebGPU is not initialised (init_webgpu has not run)".into(),
        )));
    }
    let requested = match path.as_str() {
        "auto" => NaBackend::Auto,
        "reference" => NaBackend::Reference,
        other => {
            return Err(js_error(DemoError::Input(format!(
                "unknown path `{other}` (auto or reference)"
            ))));
        }
    };
    if warm > 50 {
        return Err(js_error(DemoError::Input(format!(
            "at most 50 timed runs, got {warm}"
        ))));
    }
    let image = Image::new(rgba, width as usize, height as usize).map_err(js_error)?;
    let demo = Demo::run::<Wgpu, NdArray>(
        Qkv::from_image(&image),
        kernel as usize,
        dilation as usize,
        requested,
        &WgpuDevice::default(),
        &Default::default(),
        warm as usize,
    )
    .await
    .map_err(js_error)?;
    Ok(DemoRun { demo })
}

/// A finished run: its summary and the heat map of any pixel.
#[wasm_bindgen]
pub struct DemoRun {
    demo: Demo,
}

#[wasm_bindgen]
impl DemoRun {
    /// The run's numbers as JSON (see `run::Summary`).
    pub fn summary_json(&self) -> String {
        serde_json::to_string(&self.demo.summary)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The attention weights of pixel `(x, y)`, head `head`: `height * width` values (row-major),
    /// the softmax over the pixel's neighbourhood and 0 elsewhere.
    ///
    /// # Errors
    /// An `Error` for a pixel or head out of range.
    pub fn weights(&self, x: u32, y: u32, head: u32) -> Result<Vec<f32>, JsValue> {
        self.demo
            .weights(x as usize, y as usize, head as usize)
            .map_err(js_error)
    }

    /// The numbers of pixel `(x, y)`, head `head`, as JSON (see `run::PixelReport`): the
    /// weights' sum and count, and how far the heat map applied to V is from the WebGPU output.
    ///
    /// # Errors
    /// An `Error` for a pixel or head out of range.
    pub fn pixel_json(&self, x: u32, y: u32, head: u32) -> Result<String, JsValue> {
        let report = self
            .demo
            .pixel(x as usize, y as usize, head as usize)
            .map_err(js_error)?;
        serde_json::to_string(&report).map_err(|e| js_error(DemoError::Backend(e.to_string())))
    }
}
