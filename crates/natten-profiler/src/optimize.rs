//! `--optimize`: times every tile configuration of the fused forward, reports the fastest and
//! stores it in the tile cache that `NaBackend::Auto` reads (`burn_natten::tuning_cache`).

use std::path::PathBuf;

use burn_natten::burn::backend::Autodiff;
use burn_natten::burn::tensor::backend::Backend;
use burn_natten::tuning_cache::{CACHE_ENV, TileCache, TileCacheEntry, TileCacheKey, cache_path};
use burn_natten::{NaBackend, NattenBackend, NattenError, TileConfig, na_tile_configs};
use indicatif::{ProgressBar, ProgressStyle};

use crate::timing::{Op, Problem, Timing, time};

/// One timed configuration.
#[derive(serde::Serialize)]
pub struct Trial {
    q_tile: Vec<usize>,
    kv_tile: Vec<usize>,
    timing: Timing,
}

/// What `--optimize` reports.
#[derive(serde::Serialize)]
pub struct Optimized {
    device: String,
    /// Every configuration, in the backend's order.
    trials: Vec<Trial>,
    /// Index of the fastest forward in `trials`.
    best: usize,
    /// The cache file the best configuration was written to.
    cache: PathBuf,
}

/// Times every configuration on `B`'s default device and stores the fastest.
///
/// # Errors
/// `Unsupported` when the backend has no tiled kernels for the problem (or `--impl reference`
/// was asked for); `InvalidArgument` naming `BURN_NATTEN_CACHE` when the cache has no path or
/// cannot be written; the errors of the timed calls.
pub fn optimize<B: Backend + NattenBackend>(p: &Problem) -> Result<Optimized, NattenError>
where
    Autodiff<B>: NattenBackend,
{
    let device = B::Device::default();
    let a = &p.args;
    let rank = a.input_size.len();
    let configs = match p.choice {
        NaBackend::Reference => Vec::new(),
        _ => na_tile_configs::<B>(&device, rank, a.dim, p.dim_value, p.dtype),
    };
    if configs.is_empty() {
        return Err(NattenError::Unsupported {
            backend: p.choice.name(),
            reason: format!(
                "`--optimize`: `{}` has no tiled kernels for this problem (nothing to tune)",
                B::name(&device)
            ),
        });
    }
    let path = cache_path().ok_or_else(|| NattenError::InvalidArgument {
        argument: CACHE_ENV,
        rule: "no tile cache path: set BURN_NATTEN_CACHE, XDG_CACHE_HOME or HOME".into(),
    })?;

    let bar = ProgressBar::new(configs.len() as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("tiles");
    let mut trials = Vec::with_capacity(configs.len());
    for tiles in &configs {
        bar.set_message(tiles.to_string());
        let op = Op::Na {
            choice: p.choice,
            tiles: Some(tiles),
        };
        trials.push(Trial {
            q_tile: tiles.q_tile.clone(),
            kv_tile: tiles.kv_tile.clone(),
            timing: time::<B>(p, op, &device)?,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let best = (0..trials.len())
        .min_by(|&i, &j| {
            trials[i]
                .timing
                .forward_ms
                .total_cmp(&trials[j].timing.forward_ms)
        })
        .expect("at least one configuration");

    let mut cache = TileCache::load(&path).unwrap_or_else(|e| {
        eprintln!("warning: {e}; starting a new cache");
        TileCache::default()
    });
    let t = &trials[best];
    cache.insert(TileCacheEntry {
        key: TileCacheKey::new::<B>(&device, &a.input_size, &p.axes, a.dim, p.dim_value, p.dtype),
        q_tile: t.q_tile.clone(),
        kv_tile: t.kv_tile.clone(),
        forward_ms: t.timing.forward_ms,
    });
    cache.save(&path)?;
    Ok(Optimized {
        device: format!("{} ({device:?})", B::name(&device)),
        trials,
        best,
        cache: path,
    })
}

/// The report as a terminal table, fastest marked.
pub fn print(r: &Optimized) {
    println!("device           {}", r.device);
    println!("{:<36} {:>12} {:>14}", "tiles", "fwd ms", "fwd+bwd ms");
    for (i, t) in r.trials.iter().enumerate() {
        let tiles = TileConfig {
            q_tile: t.q_tile.clone(),
            kv_tile: t.kv_tile.clone(),
        };
        let bwd = t
            .timing
            .forward_backward_ms
            .map_or("-".into(), |ms| format!("{ms:.3}"));
        let mark = if i == r.best { "  <- best" } else { "" };
        println!(
            "{:<36} {:>12.3} {bwd:>14}{mark}",
            tiles.to_string(),
            t.timing.forward_ms
        );
    }
    let best = &r.trials[r.best];
    let words = |xs: &[usize]| {
        xs.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "best: --q-tile {} --kv-tile {} ({:.3} ms), stored in {}",
        words(&best.q_tile),
        words(&best.kv_tile),
        best.timing.forward_ms,
        r.cache.display()
    );
}
