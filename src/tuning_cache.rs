//! The on-disk cache of tuned tile configurations.
//!
//! `natten-profile --optimize` times every tile configuration of the fused forward
//! ([`crate::na_tile_configs`]) on one problem and stores the fastest here. When a call leaves
//! the tiles to the library ([`NaBackend::Auto`](crate::NaBackend::Auto) and no
//! [`NaOptions::with_tiles`](crate::NaOptions::with_tiles)), `na1d`/`na2d`/`na3d` look the problem
//! up and pass a cached configuration to the backend, **if** the backend still offers it on this
//! device ([`NattenBackend::tile_configs`]); otherwise the backend chooses as usual.
//!
//! The file is JSON ([`TileCache`]) at [`cache_path`]: `$BURN_NATTEN_CACHE` when set, else
//! `$XDG_CACHE_HOME/burn-natten/tiles.json`, else `$HOME/.cache/burn-natten/tiles.json`. A
//! missing file means no entries; an unreadable or corrupt one is ignored with one warning on
//! stderr per version of the file, never a panic or an error of the attention call.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use burn::tensor::DType;
use natten_core::{AxisParams, NattenError};
use serde::{Deserialize, Serialize};

use crate::backend::{NattenBackend, TileConfig};

/// The environment variable that overrides the cache file's path.
pub const CACHE_ENV: &str = "BURN_NATTEN_CACHE";

/// The format version written into [`TileCache::version`]; files of another version are
/// ignored.
pub const CACHE_VERSION: u32 = 1;

/// What a cached configuration was tuned for: the device, the rank, the size class of the
/// token grid, the window, the head dims and the dtype.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileCacheKey {
    /// Rust type of the backend's device (`Autodiff<B>`, `Fusion<B>` and `B` share it, and
    /// their kernels): e.g. `burn_wgpu::...::WgpuDevice`.
    pub device_type: String,
    /// The device, as `Debug` prints it (e.g. `DefaultDevice`, `Cuda(0)`).
    pub device: String,
    /// Number of spatial axes (1, 2 or 3).
    pub rank: usize,
    /// Per axis, the axis length rounded up to a power of two: problems of one class share an
    /// entry.
    pub shape_class: Vec<usize>,
    /// Kernel (window) size per axis.
    pub kernel_size: Vec<usize>,
    /// Stride per axis.
    pub stride: Vec<usize>,
    /// Dilation per axis.
    pub dilation: Vec<usize>,
    /// Causal flag per axis.
    pub causal: Vec<bool>,
    /// Head dim of Q and K.
    pub head_dim: usize,
    /// Head dim of V.
    pub head_dim_v: usize,
    /// Element type, as `Debug` prints [`DType`] (e.g. `F32`, `F16`).
    pub dtype: String,
}

impl TileCacheKey {
    /// The key of an NA problem on `device`: token grid `spatial` (one length per axis),
    /// window parameters `axes`, head dims and dtype of Q.
    pub fn new<B: NattenBackend>(
        device: &B::Device,
        spatial: &[usize],
        axes: &[AxisParams],
        head_dim: usize,
        head_dim_v: usize,
        dtype: DType,
    ) -> Self {
        Self {
            device_type: std::any::type_name::<B::Device>().to_string(),
            device: format!("{device:?}"),
            rank: spatial.len(),
            shape_class: spatial.iter().map(|n| n.next_power_of_two()).collect(),
            kernel_size: axes.iter().map(|a| a.kernel_size).collect(),
            stride: axes.iter().map(|a| a.stride).collect(),
            dilation: axes.iter().map(|a| a.dilation).collect(),
            causal: axes.iter().map(|a| a.causal).collect(),
            head_dim,
            head_dim_v,
            dtype: format!("{dtype:?}"),
        }
    }
}

/// One tuned configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileCacheEntry {
    /// The problem class it was tuned for.
    pub key: TileCacheKey,
    /// Queries per axis of a Q tile.
    pub q_tile: Vec<usize>,
    /// Keys per axis of a KV tile.
    pub kv_tile: Vec<usize>,
    /// The forward's median time when it was tuned, in milliseconds (informative).
    pub forward_ms: f64,
}

impl TileCacheEntry {
    /// The entry's tile configuration.
    pub fn tiles(&self) -> TileConfig {
        TileConfig {
            q_tile: self.q_tile.clone(),
            kv_tile: self.kv_tile.clone(),
        }
    }
}

/// The cache file's content: `{"version": 1, "entries": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileCache {
    /// Format version ([`CACHE_VERSION`]).
    pub version: u32,
    /// Tuned configurations, at most one per key.
    pub entries: Vec<TileCacheEntry>,
}

impl Default for TileCache {
    fn default() -> Self {
        Self {
            version: CACHE_VERSION,
            entries: Vec::new(),
        }
    }
}

fn cache_error(path: &Path, what: impl std::fmt::Display) -> NattenError {
    NattenError::InvalidArgument {
        argument: CACHE_ENV,
        rule: format!("tile cache {}: {what}", path.display()),
    }
}

impl TileCache {
    /// Reads the cache at `path`; a missing file is an empty cache.
    ///
    /// # Errors
    /// [`NattenError::InvalidArgument`] naming `BURN_NATTEN_CACHE` when the file cannot be read,
    /// is not a tile cache, or has another format version.
    pub fn load(path: &Path) -> Result<Self, NattenError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(cache_error(path, e)),
        };
        let cache: Self = serde_json::from_str(&text).map_err(|e| cache_error(path, e))?;
        if cache.version != CACHE_VERSION {
            return Err(cache_error(
                path,
                format!(
                    "format version {} (this library reads {CACHE_VERSION})",
                    cache.version
                ),
            ));
        }
        Ok(cache)
    }

    /// Writes the cache to `path` (through a temporary file), creating its directory.
    ///
    /// # Errors
    /// [`NattenError::InvalidArgument`] naming `BURN_NATTEN_CACHE` when it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), NattenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| cache_error(path, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| cache_error(path, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| cache_error(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| cache_error(path, e))
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &TileCacheKey) -> Option<&TileCacheEntry> {
        self.entries.iter().find(|e| &e.key == key)
    }

    /// Adds `entry`, replacing the one with the same key.
    pub fn insert(&mut self, entry: TileCacheEntry) {
        self.entries.retain(|e| e.key != entry.key);
        self.entries.push(entry);
    }
}

/// The cache file's path: `$BURN_NATTEN_CACHE`, else `$XDG_CACHE_HOME/burn-natten/tiles.json`,
/// else `$HOME/.cache/burn-natten/tiles.json`; `None` when none of them is set, and always on
/// wasm32 (a browser has no file system to keep the cache in).
pub fn cache_path() -> Option<PathBuf> {
    if cfg!(target_family = "wasm") {
        return None;
    }
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var(CACHE_ENV) {
        return Some(PathBuf::from(path));
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("burn-natten").join("tiles.json"))
}

/// The file as last read, and the keys already warned about.
struct Loaded {
    path: PathBuf,
    stamp: (SystemTime, u64),
    cache: Arc<TileCache>,
    warned: HashSet<TileCacheKey>,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// The tiles that [`NaBackend::Auto`](crate::NaBackend::Auto) takes from the cache at
/// [`cache_path`] for this problem (see [`tuned_tiles`]).
pub(crate) fn cached_tiles<B: NattenBackend>(
    device: &B::Device,
    spatial: &[usize],
    axes: &[AxisParams],
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<TileConfig> {
    tuned_tiles::<B>(
        &cache_path()?,
        device,
        spatial,
        axes,
        head_dim,
        head_dim_v,
        dtype,
    )
}

/// The tuned tiles for an NA problem (token grid `spatial`, window `axes`, head dims and dtype
/// of Q, on `device`) in the cache file at `path`: `Some` when the file has an entry for the
/// problem's [`TileCacheKey`] that `B` still offers on `device`
/// ([`NattenBackend::tile_configs`]).
///
/// Never fails: a missing file gives `None`; an unreadable or corrupt file, or an entry that
/// is no longer valid, is reported once on stderr and gives `None`. The file is read again
/// only when its modification time or size changed.
pub fn tuned_tiles<B: NattenBackend>(
    path: &Path,
    device: &B::Device,
    spatial: &[usize],
    axes: &[AxisParams],
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<TileConfig> {
    let meta = std::fs::metadata(path).ok()?;
    let stamp = (meta.modified().ok()?, meta.len());
    let mut guard = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !matches!(&*guard, Some(l) if l.path == path && l.stamp == stamp) {
        let cache = TileCache::load(path).unwrap_or_else(|e| {
            eprintln!("burn-natten: warning: ignoring the tile cache: {e}");
            TileCache::default()
        });
        *guard = Some(Loaded {
            path: path.to_path_buf(),
            stamp,
            cache: Arc::new(cache),
            warned: HashSet::new(),
        });
    }
    let loaded = guard.as_mut()?;
    let key = TileCacheKey::new::<B>(device, spatial, axes, head_dim, head_dim_v, dtype);
    let tiles = loaded.cache.get(&key)?.tiles();
    if B::tile_configs(device, spatial.len(), head_dim, head_dim_v, dtype).contains(&tiles) {
        return Some(tiles);
    }
    if loaded.warned.insert(key) {
        eprintln!(
            "burn-natten: warning: ignoring the cached tiles {tiles} in {}: not a tile \
             configuration of this problem on this device (re-run `natten-profile --optimize`)",
            loaded.path.display()
        );
    }
    None
}
