//! The attention weights of one query pixel (the heat map), with the library's semantics: the
//! neighbourhood comes from `natten-core`'s window rule (the one source of truth), the scores
//! are `scale * q . k` with the default scale `HEAD_DIM^-0.5`, and the weights their softmax.

use natten_core::AxisParams;
use natten_core::neighborhood::{flat_index, neighbors};
use natten_core::validate::validate_axes;

use crate::DemoError;
use crate::scene::{HEAD_DIM, HEADS, Qkv};

/// The per-axis parameters of the demo's 2-D NA: window `kernel` and dilation `dilation` on
/// both axes, stride 1, not causal.
pub fn axes(kernel: usize, dilation: usize) -> [AxisParams; 2] {
    [AxisParams {
        kernel_size: kernel,
        stride: 1,
        dilation,
        causal: false,
    }; 2]
}

/// The attention weights of pixel `(x, y)`, head `head`, over the whole image: a
/// `height * width` map (row-major) that is the softmax of the scores over the pixel's
/// neighbourhood and 0 elsewhere. Computed in f64.
///
/// # Errors
/// [`DemoError::Input`] for a pixel or head out of range; [`DemoError::Natten`] for a window
/// that NATTEN's rules reject on this image.
pub fn pixel_weights(
    qkv: &Qkv,
    kernel: usize,
    dilation: usize,
    x: usize,
    y: usize,
    head: usize,
) -> Result<Vec<f32>, DemoError> {
    let spatial = [qkv.height, qkv.width];
    let axes = axes(kernel, dilation);
    validate_axes(&spatial, &axes)?;
    if x >= qkv.width || y >= qkv.height {
        return Err(DemoError::Input(format!(
            "pixel ({x}, {y}) is outside the {} x {} image",
            qkv.width, qkv.height
        )));
    }
    if head >= HEADS {
        return Err(DemoError::Input(format!(
            "head {head} does not exist (the demo has {HEADS})"
        )));
    }
    let query = qkv.row(&qkv.q, flat_index(&[y, x], &spatial), head);
    let scale = (HEAD_DIM as f64).powf(-0.5);
    let keys = neighbors(&spatial, &axes, &[y, x]);
    let scores: Vec<f64> = keys
        .iter()
        .map(|&key| {
            let k = qkv.row(&qkv.k, key, head);
            scale
                * query
                    .iter()
                    .zip(k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    let mut map = vec![0.0f32; qkv.height * qkv.width];
    for (&key, e) in keys.iter().zip(&exps) {
        map[key] = (e / total) as f32;
    }
    Ok(map)
}

/// `sum_j weights[j] * v[j]` for head `head`: the NA output of the query whose weights these
/// are (in f64), to compare with the output a backend computed.
pub fn weighted_values(qkv: &Qkv, weights: &[f32], head: usize) -> [f64; HEAD_DIM] {
    let mut acc = [0.0f64; HEAD_DIM];
    for (token, &w) in weights.iter().enumerate().filter(|(_, w)| **w != 0.0) {
        for (a, v) in acc.iter_mut().zip(qkv.row(&qkv.v, token, head)) {
            *a += w as f64 * *v as f64;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::Image;

    fn qkv(w: usize, h: usize) -> Qkv {
        Qkv::from_image(&Image::generated(w, h).unwrap())
    }

    #[test]
    fn weights_sum_to_one_on_the_window_only() {
        let qkv = qkv(12, 10);
        // L=10, k=3, d=2, y=9: group 1, index 4 of a group of 5 -> rows 5, 7, 9 (the design's
        // worked example L=9 k=3 d=2 q8 -> [4, 6, 8], shifted to the odd group of L=10).
        // L=12, k=3, d=2, x=0: group 0, rows 0, 2, 4.
        let map = pixel_weights(&qkv, 3, 2, 0, 9, 1).unwrap();
        let support: Vec<usize> = (0..map.len()).filter(|&i| map[i] != 0.0).collect();
        let expected: Vec<usize> = [5, 7, 9]
            .iter()
            .flat_map(|r| [0, 2, 4].map(|c| r * 12 + c))
            .collect();
        assert_eq!(support, expected);
        let sum: f64 = map.iter().map(|&w| w as f64).sum();
        assert!((sum - 1.0).abs() < 1e-6, "sum {sum}");
        assert!(map.iter().all(|&w| (0.0..=1.0).contains(&w)));
    }

    #[test]
    fn bad_clicks_and_windows_are_errors() {
        let qkv = qkv(8, 6);
        assert!(matches!(
            pixel_weights(&qkv, 3, 1, 8, 0, 0),
            Err(DemoError::Input(_))
        ));
        assert!(matches!(
            pixel_weights(&qkv, 3, 1, 0, 6, 0),
            Err(DemoError::Input(_))
        ));
        assert!(matches!(
            pixel_weights(&qkv, 3, 1, 0, 0, HEADS),
            Err(DemoError::Input(_))
        ));
        // k * d > 6 rows.
        assert!(matches!(
            pixel_weights(&qkv, 4, 2, 0, 0, 0),
            Err(DemoError::Natten(_))
        ));
        assert!(matches!(
            pixel_weights(&qkv, 1, 1, 0, 0, 0),
            Err(DemoError::Natten(_))
        ));
        assert!(matches!(
            pixel_weights(&qkv, 3, 0, 0, 0, 0),
            Err(DemoError::Natten(_))
        ));
    }

    #[test]
    fn weighted_values_of_a_one_hot_map_is_that_value() {
        let qkv = qkv(5, 5);
        let mut map = vec![0.0; 25];
        map[7] = 1.0;
        let out = weighted_values(&qkv, &map, 1);
        for (a, b) in out.iter().zip(qkv.row(&qkv.v, 7, 1)) {
            assert_eq!(*a, *b as f64);
        }
    }
}
