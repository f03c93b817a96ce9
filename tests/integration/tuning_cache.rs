//! The tile cache (`burn_natten::tuning_cache`): round trip, bad files ignored without a panic,
//! a valid entry picked up, one the backend no longer offers ignored.

use std::path::PathBuf;

use burn::tensor::DType;
use burn_natten::tuning_cache::{CACHE_ENV, TileCache, TileCacheEntry, TileCacheKey, tuned_tiles};
use burn_natten::*;

use crate::common::{Cpu, Gpu, wgpu_available};

const SPATIAL: [usize; 2] = [14, 11];
const HEAD_DIM: usize = 16;

fn axes() -> [AxisParams; 2] {
    NaOptions::new([5, 3]).with_dilation([2, 1]).axes()
}

/// A fresh file path under the temp dir, unique per test and process.
fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-natten-cache-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn entry<B: NattenBackend>(device: &B::Device, tiles: &TileConfig) -> TileCacheEntry {
    TileCacheEntry {
        key: TileCacheKey::new::<B>(device, &SPATIAL, &axes(), HEAD_DIM, HEAD_DIM, DType::F32),
        q_tile: tiles.q_tile.clone(),
        kv_tile: tiles.kv_tile.clone(),
        forward_ms: 1.0,
    }
}

fn lookup<B: NattenBackend>(path: &std::path::Path, device: &B::Device) -> Option<TileConfig> {
    tuned_tiles::<B>(
        path,
        device,
        &SPATIAL,
        &axes(),
        HEAD_DIM,
        HEAD_DIM,
        DType::F32,
    )
}

#[test]
fn cache_files_round_trip_and_bad_ones_are_errors_not_panics() {
    let device = Default::default();
    let tiles = TileConfig {
        q_tile: vec![8, 4],
        kv_tile: vec![4, 8],
    };
    // Missing: empty, and no tiles.
    let missing = temp_file("missing.json");
    assert_eq!(
        TileCache::load(&missing).expect("missing is empty"),
        TileCache::default()
    );
    assert_eq!(lookup::<Cpu>(&missing, &device), None);

    // Round trip; one entry per key.
    let path = temp_file("round-trip.json");
    let mut cache = TileCache::default();
    cache.insert(entry::<Cpu>(&device, &tiles));
    cache.insert(entry::<Cpu>(&device, &tiles));
    cache.save(&path).expect("written");
    let loaded = TileCache::load(&path).expect("read back");
    assert_eq!(loaded, cache);
    assert_eq!(loaded.entries.len(), 1);
    // NdArray has no tiled kernels: its entry is not a valid configuration there.
    assert_eq!(lookup::<Cpu>(&path, &device), None);

    // Corrupt file and another format version: errors naming the variable; lookups ignore them.
    let corrupt = temp_file("corrupt.json");
    std::fs::write(&corrupt, "{ not json").expect("written");
    let err = TileCache::load(&corrupt).unwrap_err();
    assert_eq!(err.argument(), Some(CACHE_ENV), "{err}");
    assert_eq!(lookup::<Cpu>(&corrupt, &device), None);
    let future = temp_file("future.json");
    std::fs::write(&future, r#"{"version": 99, "entries": []}"#).expect("written");
    let err = TileCache::load(&future).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn a_cached_entry_is_picked_up_and_an_invalid_one_ignored() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let valid = na_tile_configs::<Gpu>(&device, 2, HEAD_DIM, HEAD_DIM, DType::F32);
    // The last configuration: not what the backend would choose by itself.
    let chosen = valid
        .last()
        .expect("the fused backend offers tiles")
        .clone();

    let good = temp_file("good.json");
    let mut cache = TileCache::default();
    cache.insert(entry::<Gpu>(&device, &chosen));
    cache.save(&good).expect("written");
    assert_eq!(lookup::<Gpu>(&good, &device), Some(chosen.clone()));
    // Another problem class (a 64x64 grid) has no entry.
    let other = tuned_tiles::<Gpu>(
        &good,
        &device,
        &[64, 64],
        &axes(),
        HEAD_DIM,
        HEAD_DIM,
        DType::F32,
    );
    assert_eq!(other, None);

    // Tiles the backend does not offer (a 3x5 Q tile is not a power-of-two box): ignored.
    let stale = temp_file("stale.json");
    let bogus = TileConfig {
        q_tile: vec![3, 5],
        kv_tile: vec![8, 8],
    };
    assert!(!valid.contains(&bogus));
    let mut cache = TileCache::default();
    cache.insert(entry::<Gpu>(&device, &bogus));
    cache.save(&stale).expect("written");
    assert_eq!(lookup::<Gpu>(&stale, &device), None);
}
