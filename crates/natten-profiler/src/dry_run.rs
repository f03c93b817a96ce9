//! `--dry-run`: which implementations can run the problem on this device, and the fused
//! forward's and backward's valid tile configurations, without running anything.

use burn_natten::burn::tensor::backend::Backend;
use burn_natten::{
    NaBackend, NattenBackend, TileConfig, na_backward_tile_configs, na_tile_configs,
};

use crate::timing::Problem;

/// What `--dry-run` reports.
#[derive(serde::Serialize)]
pub struct DryRun {
    device: String,
    /// Implementations that accept the problem (`NaBackend` names).
    implementations: Vec<&'static str>,
    /// `(q_tile, kv_tile)` shapes that `--q-tile/--kv-tile` (`NaOptions::with_tiles`) accept.
    forward_tiles: Vec<(Vec<usize>, Vec<usize>)>,
    /// `(q_tile, kv_tile)` shapes of the backward (`NaOptions::with_backward_tiles`); empty
    /// where the backward has no tile choice.
    backward_tiles: Vec<(Vec<usize>, Vec<usize>)>,
}

/// Asks backend `B` about the problem.
pub fn dry_run<B: Backend + NattenBackend>(p: &Problem) -> DryRun {
    let device = B::Device::default();
    let a = &p.args;
    let mut implementations: Vec<&'static str> = [NaBackend::Reference, NaBackend::CubeFna]
        .into_iter()
        .filter(|&c| B::check_backend(c, a.dim, p.dim_value).is_ok())
        .map(|c| c.name())
        .collect();
    if B::cuda_fna_unsupported(&device, a.dim, p.dim_value, p.dtype).is_none() {
        implementations.push(NaBackend::CudaFna.name());
    }
    let pairs = |configs: Vec<TileConfig>| -> Vec<(Vec<usize>, Vec<usize>)> {
        configs.into_iter().map(|t| (t.q_tile, t.kv_tile)).collect()
    };
    let rank = a.input_size.len();
    DryRun {
        device: format!("{} ({device:?})", B::name(&device)),
        implementations,
        forward_tiles: pairs(na_tile_configs::<B>(
            &device,
            rank,
            a.dim,
            p.dim_value,
            p.dtype,
        )),
        backward_tiles: pairs(na_backward_tile_configs::<B>(
            &device,
            rank,
            a.dim,
            p.dim_value,
            p.dtype,
        )),
    }
}

/// The report as a terminal table.
pub fn print(r: &DryRun) {
    println!("device           {}", r.device);
    println!("implementations  {}", r.implementations.join(", "));
    let words = |xs: &[usize]| {
        xs.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("forward tiles    {} configurations", r.forward_tiles.len());
    for (q, kv) in &r.forward_tiles {
        println!(
            "                 --q-tile {} --kv-tile {}",
            words(q),
            words(kv)
        );
    }
    println!("backward tiles   {} configurations", r.backward_tiles.len());
    for (q, kv) in &r.backward_tiles {
        println!(
            "                 --backward-q-tile {} --backward-kv-tile {}",
            words(q),
            words(kv)
        );
    }
}
