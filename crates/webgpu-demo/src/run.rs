//! Running the demo's 2-D NA on a Burn backend: timed calls of [`burn_natten::na2d`] with
//! asynchronous read-back (the only kind a browser allows), which path the library takes, and
//! the comparison with the reference.

use burn::tensor::{DType, Tensor, TensorData};
use burn_natten::{NaOptions, NattenBackend, na_tile_configs, na2d};
use serde::Serialize;
use web_time::Instant;

pub use burn_natten::NaBackend;

use crate::DemoError;
use crate::scene::{HEAD_DIM, HEADS, Qkv};
use crate::weights::{pixel_weights, weighted_values};

/// The output of a series of timed calls of the same problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// The output `[height, width, HEADS, HEAD_DIM]`, row-major (of the last call).
    pub out: Vec<f32>,
    /// Milliseconds of the first call (shader compilation and allocation included).
    pub first_ms: f64,
    /// Milliseconds of each later call (the warm runs).
    pub warm_ms: Vec<f64>,
}

impl Timed {
    /// The median of the warm runs (the first call's time when there is none).
    pub fn median_ms(&self) -> f64 {
        if self.warm_ms.is_empty() {
            return self.first_ms;
        }
        let mut t = self.warm_ms.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        }
    }
}

/// Runs `na2d` on `qkv` with window `kernel`, dilation `dilation` and the implementation
/// `backend` on `device`: one first call, then `warm` more, each timed from the call to the end
/// of the asynchronous read-back of its output (`into_data_async`, so the time includes the
/// device's work and the copy back; Q/K/V are uploaded once, before the first call).
///
/// # Errors
/// [`DemoError::Natten`] for a window that NATTEN's rules reject on this image (before any
/// work); [`DemoError::Backend`] when the read-back fails.
pub async fn run_na2d<B: NattenBackend>(
    qkv: &Qkv,
    kernel: usize,
    dilation: usize,
    backend: NaBackend,
    device: &B::Device,
    warm: usize,
) -> Result<Timed, DemoError> {
    let shape = qkv.shape();
    let tensor =
        |data: &[f32]| Tensor::<B, 5>::from_data(TensorData::new(data.to_vec(), shape), device);
    let (q, k, v) = (tensor(&qkv.q), tensor(&qkv.k), tensor(&qkv.v));
    let opts = NaOptions::new([kernel; 2])
        .with_dilation([dilation; 2])
        .with_backend(backend);
    let mut times = Vec::with_capacity(warm + 1);
    let mut out = Vec::new();
    for _ in 0..=warm {
        let start = Instant::now();
        let result = na2d(q.clone(), k.clone(), v.clone(), &opts)?;
        let data = result
            .into_data_async()
            .await
            .map_err(|e| DemoError::Backend(format!("reading the output back: {e:?}")))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        out = data
            .to_vec::<f32>()
            .map_err(|e| DemoError::Backend(format!("the output is not f32: {e:?}")))?;
    }
    Ok(Timed {
        out,
        first_ms: times[0],
        warm_ms: times[1..].to_vec(),
    })
}

/// Which implementation [`NaBackend::Auto`] runs for the demo's problem (f32, head dim
/// [`HEAD_DIM`]) on `device`, as the library decides it: the fused CubeCL kernels when they
/// offer tile configurations there ([`na_tile_configs`]: some block size of every pass fits
/// the device's shared memory), else the reference (Burn tensor ops).
pub fn auto_path<B: NattenBackend>(device: &B::Device) -> PathInfo {
    let configs = na_tile_configs::<B>(device, 2, HEAD_DIM, HEAD_DIM, DType::F32);
    let block = |tile: &[usize]| tile.iter().product::<usize>();
    PathInfo {
        fused: !configs.is_empty(),
        tile_configs: configs.len(),
        block: configs
            .first()
            .map(|t| [block(&t.q_tile), block(&t.kv_tile)]),
    }
}

/// What [`auto_path`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathInfo {
    /// Whether `Auto` runs the fused CubeCL kernels (else the reference).
    pub fused: bool,
    /// How many tile configurations the fused forward offers on the device.
    pub tile_configs: usize,
    /// The preferred block, `[queries, keys]` per cube: the largest that fits (the configurations
    /// are listed preferred first), which `Auto` uses without a cached or explicit choice.
    pub block: Option<[usize; 2]>,
}

/// The largest `|a - b|` over two equally long slices (`inf` when their lengths differ, NaN
/// when an entry is NaN).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

/// A finished run of the demo: its input, the backend's output and the summary the page shows.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The input.
    pub qkv: Qkv,
    /// Window size (both axes).
    pub kernel: usize,
    /// Dilation (both axes).
    pub dilation: usize,
    /// The output of the timed backend, `[height, width, HEADS, HEAD_DIM]`.
    pub out: Vec<f32>,
    /// The summary.
    pub summary: Summary,
}

/// The numbers of a run, as the page shows them (and the end-to-end test reads them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Image width (tokens per row).
    pub width: usize,
    /// Image height (rows).
    pub height: usize,
    /// Attention heads.
    pub heads: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Window size on both axes.
    pub kernel: usize,
    /// Dilation on both axes.
    pub dilation: usize,
    /// The implementation asked for: `auto` or `reference`.
    pub requested: String,
    /// The implementation that ran: `fused CubeCL kernels` or `reference (Burn tensor ops)`.
    pub path: String,
    /// What `Auto` finds on this device.
    pub auto: PathInfo,
    /// First call on the timed backend, ms (includes shader compilation).
    pub first_ms: f64,
    /// Median of the warm calls on the timed backend, ms.
    pub median_ms: f64,
    /// Every warm call, ms.
    pub warm_ms: Vec<f64>,
    /// One call of the reference backend (NdArray, CPU), ms.
    pub reference_ms: f64,
    /// `max |out - reference|` over the whole output.
    pub max_abs_diff: f32,
    /// `max |reference|` (the scale the difference is measured against).
    pub max_abs_reference: f32,
}

impl Demo {
    /// Runs the demo: `na2d` on `device` of backend `B` (`requested`: `Auto` or `Reference`),
    /// one first call and `warm` timed ones, then once on `reference_device` of backend `R`
    /// (the reference: NdArray in the browser), and compares the two.
    ///
    /// # Errors
    /// [`DemoError::Input`] for an implementation other than `Auto` and `Reference`;
    /// [`DemoError::Natten`] for a window that NATTEN's rules reject; [`DemoError::Backend`]
    /// for a failed read-back.
    pub async fn run<B: NattenBackend, R: NattenBackend>(
        qkv: Qkv,
        kernel: usize,
        dilation: usize,
        requested: NaBackend,
        device: &B::Device,
        reference_device: &R::Device,
        warm: usize,
    ) -> Result<Self, DemoError> {
        let auto = auto_path::<B>(device);
        let fused = match requested {
            NaBackend::Auto => auto.fused,
            NaBackend::Reference => false,
            other => {
                return Err(DemoError::Input(format!(
                    "the demo runs `auto` or `reference`, not `{}`",
                    other.name()
                )));
            }
        };
        let timed = run_na2d::<B>(&qkv, kernel, dilation, requested, device, warm).await?;
        let reference = run_na2d::<R>(
            &qkv,
            kernel,
            dilation,
            NaBackend::Reference,
            reference_device,
            0,
        )
        .await?;
        let summary = Summary {
            width: qkv.width,
            height: qkv.height,
            heads: HEADS,
            head_dim: HEAD_DIM,
            kernel,
            dilation,
            requested: requested.name().to_string(),
            path: if fused {
                "fused CubeCL kernels".into()
            } else {
                "reference (Burn tensor ops)".into()
            },
            auto,
            first_ms: timed.first_ms,
            median_ms: timed.median_ms(),
            warm_ms: timed.warm_ms.clone(),
            reference_ms: reference.first_ms,
            max_abs_diff: max_abs_diff(&timed.out, &reference.out),
            max_abs_reference: reference.out.iter().fold(0.0, |m, x| m.max(x.abs())),
        };
        Ok(Self {
            qkv,
            kernel,
            dilation,
            out: timed.out,
            summary,
        })
    }

    /// The heat map of pixel `(x, y)`, head `head`: see [`pixel_weights`].
    ///
    /// # Errors
    /// As [`pixel_weights`].
    pub fn weights(&self, x: usize, y: usize, head: usize) -> Result<Vec<f32>, DemoError> {
        pixel_weights(&self.qkv, self.kernel, self.dilation, x, y, head)
    }

    /// The clicked pixel's numbers: the weights' sum, count and largest value, and how far
    /// `sum_j w_j v_j` (the heat map applied to V) is from the backend's output at the pixel.
    ///
    /// # Errors
    /// As [`pixel_weights`].
    pub fn pixel(&self, x: usize, y: usize, head: usize) -> Result<PixelReport, DemoError> {
        let weights = self.weights(x, y, head)?;
        let token = y * self.qkv.width + x;
        let out = &self.out[(token * HEADS + head) * HEAD_DIM..][..HEAD_DIM];
        let recomposed = weighted_values(&self.qkv, &weights, head);
        Ok(PixelReport {
            x,
            y,
            head,
            weight_sum: weights.iter().map(|&w| w as f64).sum(),
            nonzero: weights.iter().filter(|&&w| w != 0.0).count(),
            max_weight: weights.iter().cloned().fold(0.0, f32::max),
            output_diff: recomposed
                .iter()
                .zip(out)
                .map(|(a, b)| (a - *b as f64).abs())
                .fold(0.0, f64::max),
        })
    }
}

/// The numbers of a clicked pixel ([`Demo::pixel`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelReport {
    /// Column.
    pub x: usize,
    /// Row.
    pub y: usize,
    /// Head.
    pub head: usize,
    /// Sum of the weights (1 up to rounding).
    pub weight_sum: f64,
    /// Pixels with a non-zero weight (the neighbourhood's size, `kernel^2`).
    pub nonzero: usize,
    /// The largest weight.
    pub max_weight: f32,
    /// `max |sum_j w_j v_j - out|` at this pixel and head: the heat map against the backend's
    /// output.
    pub output_diff: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::Image;
    use burn::backend::NdArray;

    /// Polls a future that never waits (NdArray reads back synchronously).
    fn ready<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the NdArray run did not complete at once"),
        }
    }

    fn demo(w: usize, h: usize, kernel: usize, dilation: usize) -> Result<Demo, DemoError> {
        let qkv = Qkv::from_image(&Image::generated(w, h).unwrap());
        let device = Default::default();
        ready(Demo::run::<NdArray, NdArray>(
            qkv,
            kernel,
            dilation,
            NaBackend::Auto,
            &device,
            &device,
            2,
        ))
    }

    #[test]
    fn heat_map_reproduces_the_library_output() {
        let demo = demo(14, 11, 5, 2).unwrap();
        let s = &demo.summary;
        assert_eq!((s.width, s.height, s.kernel, s.dilation), (14, 11, 5, 2));
        assert_eq!(s.warm_ms.len(), 2);
        assert!(s.first_ms >= 0.0 && s.median_ms >= 0.0);
        // NdArray has no fused kernels: Auto is the reference, identical to itself.
        assert!(!s.auto.fused);
        assert_eq!((s.auto.tile_configs, s.auto.block), (0, None));
        assert_eq!(s.path, "reference (Burn tensor ops)");
        assert_eq!(s.max_abs_diff, 0.0);
        assert!(s.max_abs_reference > 0.1);
        for (x, y, head) in [(0, 0, 0), (13, 10, 1), (6, 5, 0), (1, 9, 1)] {
            let p = demo.pixel(x, y, head).unwrap();
            assert_eq!(p.nonzero, 25);
            assert!((p.weight_sum - 1.0).abs() < 1e-6);
            assert!(p.output_diff < 1e-5, "{p:?}");
            assert!(p.max_weight > 1.0 / 25.0 && p.max_weight <= 1.0);
        }
    }

    #[test]
    fn a_wrong_heat_map_is_caught() {
        // The consistency check must fail when the weights are not those of the output: use
        // another head's weights.
        let demo = demo(10, 10, 3, 1).unwrap();
        let w = demo.weights(4, 4, 1).unwrap();
        let recomposed = weighted_values(&demo.qkv, &w, 0);
        let token = 4 * 10 + 4;
        let out = &demo.out[token * HEADS * HEAD_DIM..][..HEAD_DIM];
        let diff = recomposed
            .iter()
            .zip(out)
            .map(|(a, b)| (a - *b as f64).abs())
            .fold(0.0, f64::max);
        assert!(diff > 1e-3, "{diff}");
    }

    #[test]
    fn bad_windows_are_errors_not_panics() {
        assert!(matches!(demo(8, 8, 9, 1), Err(DemoError::Natten(_))));
        assert!(matches!(demo(8, 8, 3, 3), Err(DemoError::Natten(_))));
        assert!(matches!(demo(8, 8, 1, 1), Err(DemoError::Natten(_))));
        let qkv = Qkv::from_image(&Image::generated(8, 8).unwrap());
        let device = Default::default();
        let cuda = ready(Demo::run::<NdArray, NdArray>(
            qkv,
            3,
            1,
            NaBackend::CudaFna,
            &device,
            &device,
            0,
        ));
        assert!(matches!(cuda, Err(DemoError::Input(_))));
    }

    #[test]
    fn max_abs_diff_sees_every_difference() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
        assert!(max_abs_diff(&[f32::NAN, 0.0], &[0.0, 0.0]).is_nan());
        assert!(max_abs_diff(&[0.0, f32::NAN], &[0.0, 0.0]).is_nan());
    }

    #[test]
    fn median_of_warm_runs() {
        let t = |warm: Vec<f64>| Timed {
            out: vec![],
            first_ms: 9.0,
            warm_ms: warm,
        };
        assert_eq!(t(vec![]).median_ms(), 9.0);
        assert_eq!(t(vec![3.0, 1.0, 2.0]).median_ms(), 2.0);
        assert_eq!(t(vec![4.0, 1.0, 2.0, 3.0]).median_ms(), 2.5);
    }
}
