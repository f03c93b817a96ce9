//! `--dry-run`: which implementations can run the problem on this device, and the fused
//! forward's valid tile configurations, without running anything.

use burn_natten::burn::tensor::backend::Backend;
use burn_natten::{NaBackend, NattenBackend, na_tile_configs};

use crate::timing::Problem;

/// What `--dry-run` reports.
#[derive(serde::Serialize)]
pub struct DryRun {
    device: String,
    /// Implementations that accept the problem (`NaBackend` names).
    implementations: Vec<&'static str>,
    /// `(q_tile, kv_tile)` shapes that `--q-tile/--kv-tile` (`NaOptions::with_tiles`) accept.
    forward_tiles: Vec<(Vec<usize>, Vec<usize>)>,
}

/// Asks backend `B` about the problem.
pub fn dry_run<B: Backend + NattenBackend>(p: &Problem) -> DryRun {
    let device = B::Device::default();
    let a = &p.args;
    let implementations = [NaBackend::Reference, NaBackend::CubeFna]
        .into_iter()
        .filter(|&c| B::check_backend(c, a.dim, p.dim_value).is_ok())
        .map(|c| c.name())
        .collect();
    let forward_tiles =
        na_tile_configs::<B>(&device, a.input_size.len(), a.dim, p.dim_value, p.dtype)
            .into_iter()
            .map(|t| (t.q_tile, t.kv_tile))
            .collect();
    DryRun {
        device: format!("{} ({device:?})", B::name(&device)),
        implementations,
        forward_tiles,
    }
}

/// The report as a terminal table.
pub fn print(r: &DryRun) {
    println!("device           {}", r.device);
    println!("implementations  {}", r.implementations.join(", "));
    println!("forward tiles    {} configurations", r.forward_tiles.len());
    let words = |xs: &[usize]| {
        xs.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (q, kv) in &r.forward_tiles {
        println!(
            "                 --q-tile {} --kv-tile {}",
            words(q),
            words(kv)
        );
    }
}
