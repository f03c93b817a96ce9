//! The demo's input: an RGBA image (picked by the user or generated), and the Q/K/V it turns
//! into. Everything here is deterministic plain Rust, the same on the host and in the browser.

use crate::DemoError;

/// Attention heads of the demo problem.
pub const HEADS: usize = 2;
/// Head dim of Q, K and V.
pub const HEAD_DIM: usize = 16;
/// The largest accepted image side, in pixels (the page scales pictures down to its size
/// setting before they get here).
pub const MAX_SIDE: usize = 256;
/// Features per pixel: colour (4), position (8), a constant (1).
pub const FEATURES: usize = 13;
/// Gain of the Q/K projection: a larger gain sharpens the softmax (the heat map).
const QK_GAIN: f32 = 3.0;

/// An RGBA image, row-major, 4 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 4` bytes, row-major, RGBA.
    pub rgba: Vec<u8>,
}

impl Image {
    /// An image from its RGBA bytes.
    ///
    /// # Errors
    /// [`DemoError::Input`] when a side is 0 or larger than [`MAX_SIDE`], or the byte count is
    /// not `width * height * 4`.
    pub fn new(rgba: Vec<u8>, width: usize, height: usize) -> Result<Self, DemoError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(DemoError::Input(format!(
                "the image must be 1 to {MAX_SIDE} pixels on each side, got {width} x {height}"
            )));
        }
        if rgba.len() != width * height * 4 {
            return Err(DemoError::Input(format!(
                "a {width} x {height} RGBA image has {} bytes, got {}",
                width * height * 4,
                rgba.len()
            )));
        }
        Ok(Self {
            width,
            height,
            rgba,
        })
    }

    /// A generated picture: a colour gradient background with a disc, a square and a diagonal
    /// stripe, so that the heat map has colour edges to follow.
    ///
    /// # Errors
    /// [`DemoError::Input`] for a side of 0 or larger than [`MAX_SIDE`].
    pub fn generated(width: usize, height: usize) -> Result<Self, DemoError> {
        let mut rgba = Vec::with_capacity(width * height * 4);
        for y in 0..height {
            for x in 0..width {
                let u = x as f32 / width.max(2).saturating_sub(1) as f32;
                let v = y as f32 / height.max(2).saturating_sub(1) as f32;
                let mut rgb = [40.0 + 120.0 * u, 60.0 + 100.0 * v, 150.0 - 60.0 * u];
                let (dx, dy) = (u - 0.32, v - 0.38);
                if dx * dx + dy * dy < 0.05 {
                    rgb = [235.0, 190.0, 40.0];
                }
                if (0.58..0.86).contains(&u) && (0.55..0.85).contains(&v) {
                    rgb = [200.0, 40.0, 60.0];
                }
                if ((u + v) - 1.05).abs() < 0.06 {
                    rgb = [250.0, 250.0, 250.0];
                }
                rgba.extend(rgb.map(|c| c as u8));
                rgba.push(255);
            }
        }
        Self::new(rgba, width, height)
    }

    /// The [`FEATURES`] features of pixel `(x, y)`: centred colour and luminance, sine/cosine
    /// positional features at two frequencies per axis, and a constant 1.
    pub fn features(&self, x: usize, y: usize) -> [f32; FEATURES] {
        let p = &self.rgba[(y * self.width + x) * 4..][..4];
        let [r, g, b] = [p[0], p[1], p[2]].map(|c| c as f32 / 255.0);
        let lum = 0.299 * r + 0.587 * g + 0.114 * b;
        let px = x as f32 / self.width.max(2).saturating_sub(1) as f32;
        let py = y as f32 / self.height.max(2).saturating_sub(1) as f32;
        let pi = std::f32::consts::PI;
        [
            2.0 * r - 1.0,
            2.0 * g - 1.0,
            2.0 * b - 1.0,
            2.0 * lum - 1.0,
            (pi * px).sin(),
            (pi * px).cos(),
            (2.0 * pi * px).sin(),
            (2.0 * pi * px).cos(),
            (pi * py).sin(),
            (pi * py).cos(),
            (2.0 * pi * py).sin(),
            (2.0 * pi * py).cos(),
            1.0,
        ]
    }
}

/// Q, K and V of the demo, heads-last without the batch axis: `[height, width, HEADS, HEAD_DIM]`,
/// row-major.
///
/// Every token is a pixel. Q and K are the same projection of the pixel's features (scaled by
/// a fixed gain), so a pixel attends most to neighbours whose colour and position resemble its
/// own; V is another projection. The projections are fixed pseudo-random matrices (a seeded
/// generator), with entries in `[-1, 1] / sqrt(FEATURES)`: every feature is in `[-1, 1]`, so
/// `|V| <= sqrt(FEATURES)` (about 3.6) and every output, a convex combination of V rows, too.
#[derive(Debug, Clone, PartialEq)]
pub struct Qkv {
    /// Rows of the token grid (the image height).
    pub height: usize,
    /// Columns of the token grid (the image width).
    pub width: usize,
    /// Queries.
    pub q: Vec<f32>,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

impl Qkv {
    /// Q, K and V of an image.
    pub fn from_image(image: &Image) -> Self {
        let cols = HEADS * HEAD_DIM;
        let p_qk = projection(0x5eed_0001, cols);
        let p_v = projection(0x5eed_0002, cols);
        let tokens = image.width * image.height;
        let (mut q, mut v) = (
            Vec::with_capacity(tokens * cols),
            Vec::with_capacity(tokens * cols),
        );
        for y in 0..image.height {
            for x in 0..image.width {
                let f = image.features(x, y);
                for c in 0..cols {
                    let dot =
                        |p: &[f32]| (0..FEATURES).map(|i| f[i] * p[i * cols + c]).sum::<f32>();
                    q.push(QK_GAIN * dot(&p_qk));
                    v.push(dot(&p_v));
                }
            }
        }
        Self {
            height: image.height,
            width: image.width,
            k: q.clone(),
            q,
            v,
        }
    }

    /// The tensor shape of Q, K and V with a batch of one: `[1, height, width, HEADS, HEAD_DIM]`.
    pub fn shape(&self) -> [usize; 5] {
        [1, self.height, self.width, HEADS, HEAD_DIM]
    }

    /// The `HEAD_DIM` entries of token `token` (flat row-major pixel index), head `head`, of
    /// `t` (one of `q`, `k`, `v`).
    pub fn row<'a>(&self, t: &'a [f32], token: usize, head: usize) -> &'a [f32] {
        &t[(token * HEADS + head) * HEAD_DIM..][..HEAD_DIM]
    }
}

/// A `FEATURES x cols` matrix, row-major, of a seeded splitmix64 stream mapped to
/// `[-1, 1] / sqrt(FEATURES)`.
fn projection(seed: u64, cols: usize) -> Vec<f32> {
    let mut state = seed;
    let scale = 1.0 / (FEATURES as f32).sqrt();
    (0..FEATURES * cols)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_images_are_errors() {
        assert!(matches!(
            Image::new(vec![0; 12], 2, 2),
            Err(DemoError::Input(_))
        ));
        assert!(matches!(Image::new(vec![], 0, 3), Err(DemoError::Input(_))));
        let big = MAX_SIDE + 1;
        assert!(matches!(
            Image::new(vec![0; big * 4], big, 1),
            Err(DemoError::Input(_))
        ));
        assert!(Image::generated(0, 8).is_err());
        assert!(Image::new(vec![7; 16], 2, 2).is_ok());
    }

    #[test]
    fn generated_image_has_the_shapes_and_is_deterministic() {
        let a = Image::generated(40, 30).unwrap();
        assert_eq!(a.rgba.len(), 40 * 30 * 4);
        assert_eq!(a, Image::generated(40, 30).unwrap());
        // The disc, the square, the stripe and the background give several distinct colours.
        let mut colours: Vec<&[u8]> = a.rgba.chunks(4).collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() > 50, "only {} colours", colours.len());
    }

    #[test]
    fn qkv_is_deterministic_bounded_and_k_equals_q() {
        let image = Image::generated(9, 7).unwrap();
        let a = Qkv::from_image(&image);
        assert_eq!(a, Qkv::from_image(&image));
        let n = 9 * 7 * HEADS * HEAD_DIM;
        assert_eq!((a.q.len(), a.k.len(), a.v.len()), (n, n, n));
        assert_eq!(a.q, a.k);
        let bound = (FEATURES as f32).sqrt();
        assert!(a.v.iter().all(|x| x.abs() <= bound));
        assert!(a.q.iter().any(|&x| x != 0.0));
        // Heads have different projections.
        assert_ne!(a.row(&a.q, 5, 0), a.row(&a.q, 5, 1));
        // The projection depends on the pixel.
        assert_ne!(a.row(&a.v, 0, 0), a.row(&a.v, 1, 0));
    }
}
