//! Build script: with the `cuda-native` feature, compiles the native CUDA kernels
//! (`kernels/fna_{forward,backward}_d*.cu`, CUTLASS/CuTe) with nvcc into fatbins under `OUT_DIR`
//! and writes `native_kernels.rs`, the list the crate embeds (`include_bytes!`). The Hopper
//! forward and backward (`kernels/fna_forward_sm90_d*.cu`, `kernels/fna_backward_sm90_d*.cu`,
//! `kernels/fna_backward_fused_sm90_d*.cu`, wgmma) are built for `sm_90a` only, and only when `90a` is among `BURN_NATTEN_CUDA_ARCHS`.
//! Without the feature it does nothing.
//!
//! Inputs (environment):
//! - `NVCC` (else `$CUDA_HOME/bin/nvcc`, else `nvcc` on `PATH`, else the venv that
//!   `scripts/install-cuda-toolchain.sh` makes in `.cuda-venv`);
//! - `CUTLASS_INCLUDE`: the CUTLASS/CuTe `include` directory (else the venv's `nvidia-cutlass`
//!   wheel);
//! - `BURN_NATTEN_CUDA_ARCHS`: comma-separated SASS targets (default `80,90a,100a`; PTX for
//!   compute_80 is always added so newer GPUs can JIT it);
//! - `BURN_NATTEN_NATIVE_HEAD_DIMS`: comma-separated head dims to build (default all:
//!   `32,64,128,256`); CI builds a smaller set to keep the compile short;
//! - `BURN_NATTEN_NVCC_JOBS`: parallel nvcc processes (default 2; each needs 1-2 GB).
//!
//! Fatbins are cached in `<target>/<profile>/burn-natten-kernels/`, keyed by a hash of the nvcc
//! command and the contents of the unit and of the `kernels/` headers it includes: a build with
//! other features (another `OUT_DIR`) or after an unrelated kernel change reuses them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Head dims with a kernel source `kernels/fna_forward_d{dim}.cu` (and, where it exists,
/// `kernels/fna_backward_d{dim}.cu`).
const HEAD_DIMS: [u32; 4] = [32, 64, 128, 256];

/// The kernel families: (source prefix, name of the generated list, built for `sm_90a` only).
const FAMILIES: [(&str, &str, bool); 5] = [
    ("fna_forward", "FNA_FORWARD_FATBINS", false),
    ("fna_backward", "FNA_BACKWARD_FATBINS", false),
    ("fna_forward_sm90", "FNA_FORWARD_SM90_FATBINS", true),
    ("fna_backward_sm90", "FNA_BACKWARD_SM90_FATBINS", true),
    (
        "fna_backward_fused_sm90",
        "FNA_BACKWARD_FUSED_SM90_FATBINS",
        true,
    ),
];

const INSTALL_HELP: &str = "the `cuda-native` feature needs nvcc (CUDA 13.0) and the CUTLASS/CuTe \
headers. Install both with `bash scripts/install-cuda-toolchain.sh` (it runs \
`pip install \"cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.2\"` and \
`pip install --no-deps nvidia-cutlass==4.2.0.0` into .cuda-venv, which this build finds by \
itself), or point NVCC and CUTLASS_INCLUDE at your own (DEVELOPERS.md: native CUDA kernels)";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA_NATIVE").is_none() {
        return;
    }
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUTLASS_INCLUDE",
        "BURN_NATTEN_CUDA_ARCHS",
        "BURN_NATTEN_NATIVE_HEAD_DIMS",
        "BURN_NATTEN_NVCC_JOBS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let kernels = root.join("kernels");
    for entry in std::fs::read_dir(&kernels)
        .expect("kernels/ exists")
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));

    let nvcc = find_nvcc(&root).unwrap_or_else(|| panic!("nvcc not found: {INSTALL_HELP}"));
    let cutlass = find_cutlass(&root)
        .unwrap_or_else(|| panic!("CUTLASS/CuTe headers not found: {INSTALL_HELP}"));
    let archs = list_env("BURN_NATTEN_CUDA_ARCHS", "80,90a,100a");
    let head_dims: Vec<u32> = list_env("BURN_NATTEN_NATIVE_HEAD_DIMS", "32,64,128,256")
        .iter()
        .map(|d| {
            d.parse()
                .ok()
                .filter(|d| HEAD_DIMS.contains(d))
                .unwrap_or_else(|| {
                    panic!("BURN_NATTEN_NATIVE_HEAD_DIMS: `{d}` is not one of {HEAD_DIMS:?}")
                })
        })
        .collect();
    let jobs: usize = std::env::var("BURN_NATTEN_NVCC_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);

    let mut gencode: Vec<String> = archs
        .iter()
        .map(|arch| format!("-gencode=arch=compute_{arch},code=sm_{arch}"))
        .collect();
    gencode.push("-gencode=arch=compute_80,code=compute_80".to_string());
    // wgmma needs the arch-specific target: SASS for sm_90a, no PTX.
    let gencode_sm90 = vec!["-gencode=arch=compute_90a,code=sm_90a".to_string()];
    let build_sm90 = archs.iter().any(|a| a == "90a");

    // out_dir is <target>/<profile>/build/<package>-<hash>/out.
    let cache = out_dir
        .ancestors()
        .nth(3)
        .map(|profile| profile.join("burn-natten-kernels"));
    let compile = |(family, dim, sm90_only): (&str, u32, bool)| -> Result<PathBuf, String> {
        let source = kernels.join(format!("{family}_d{dim}.cu"));
        let target = out_dir.join(format!("{family}_d{dim}.fatbin"));
        let mut args: Vec<String> = [
            "-fatbin",
            "-O3",
            "-std=c++17",
            "--expt-relaxed-constexpr",
            "-lineinfo",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(if sm90_only { &gencode_sm90 } else { &gencode });
        args.push(format!("-I{}", cutlass.display()));
        args.push(format!("-I{}", kernels.display()));
        let cached = cache.as_ref().map(|dir| {
            let key = unit_key(&nvcc, &args, &source, &kernels);
            dir.join(format!("{family}_d{dim}-{key:016x}.fatbin"))
        });
        if let Some(cached) = cached.as_ref().filter(|c| c.is_file()) {
            std::fs::copy(cached, &target).map_err(|e| format!("{}: {e}", cached.display()))?;
            return Ok(target);
        }
        let output = Command::new(&nvcc)
            .args(&args)
            .arg(&source)
            .arg("-o")
            .arg(&target)
            .output()
            .map_err(|e| format!("could not run {}: {e}", nvcc.display()))?;
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {}:\n{}{}",
                source.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        if let Some(cached) = cached {
            // Best effort (a read-only target directory only loses the cache): written aside,
            // then renamed, so a concurrent build never reads half a fatbin.
            let partial = cached.with_extension(format!("partial{}", std::process::id()));
            let stored = std::fs::create_dir_all(cached.parent().expect("in the cache dir"))
                .and_then(|()| std::fs::copy(&target, &partial))
                .and_then(|_| std::fs::rename(&partial, &cached));
            if stored.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
        }
        Ok(target)
    };

    let units: Vec<(&str, u32, bool)> = FAMILIES
        .iter()
        .filter(|&&(_, _, sm90_only)| build_sm90 || !sm90_only)
        .flat_map(|&(family, _, sm90_only)| {
            head_dims.iter().map(move |&dim| (family, dim, sm90_only))
        })
        .filter(|(family, dim, _)| kernels.join(format!("{family}_d{dim}.cu")).is_file())
        .collect();

    // A small pool of nvcc processes (CUTLASS translation units are memory-hungry).
    let mut built = Vec::new();
    for chunk in units.chunks(jobs) {
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&unit| (unit, scope.spawn(move || compile(unit))))
                .collect();
            handles
                .into_iter()
                .map(|(unit, h)| (unit, h.join().expect("nvcc thread")))
                .collect()
        });
        for (unit, result) in results {
            match result {
                Ok(path) => built.push((unit, path)),
                Err(e) => panic!("{e}"),
            }
        }
    }

    let mut listing = String::new();
    for (family, list, _) in FAMILIES {
        listing.push_str(&format!(
            "/// Fatbins of `kernels/{family}_d*.cu` built by build.rs: (head dim, fatbin bytes).\n\
             pub(crate) static {list}: &[(usize, &[u8])] = &[\n"
        ));
        for ((_, dim, _), path) in built.iter().filter(|((f, _, _), _)| *f == family) {
            listing.push_str(&format!(
                "    ({dim}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
        listing.push_str("];\n");
    }
    std::fs::write(out_dir.join("native_kernels.rs"), listing).expect("write OUT_DIR");
}

/// The cache key of a unit: the nvcc command and the contents of `source` and of every header
/// of `kernels` it includes (`#include "..."`, transitively). The CUTLASS headers are named by
/// their directory (a pinned wheel), not hashed.
fn unit_key(nvcc: &Path, args: &[String], source: &Path, kernels: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    nvcc.hash(&mut hasher);
    args.hash(&mut hasher);
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut pending = vec![source.to_path_buf()];
    while let Some(file) = pending.pop() {
        if seen.contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        file.file_name().hash(&mut hasher);
        text.hash(&mut hasher);
        for line in text.lines() {
            let included = line
                .trim_start()
                .strip_prefix("#include \"")
                .and_then(|rest| rest.split('"').next());
            if let Some(name) = included {
                let path = kernels.join(name);
                if path.is_file() {
                    pending.push(path);
                }
            }
        }
        seen.push(file);
    }
    hasher.finish()
}

fn list_env(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn venv_site_packages(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".cuda-venv").join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(nvcc) = std::env::var_os("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let nvcc = PathBuf::from(home).join("bin").join("nvcc");
        if nvcc.is_file() {
            return Some(nvcc);
        }
    }
    if Command::new("nvcc").arg("--version").output().is_ok() {
        return Some(PathBuf::from("nvcc"));
    }
    let nvcc = venv_site_packages(root)?.join("nvidia/cu13/bin/nvcc");
    nvcc.is_file().then_some(nvcc)
}

fn find_cutlass(root: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CUTLASS_INCLUDE") {
        return Some(PathBuf::from(dir));
    }
    let dir = venv_site_packages(root)?.join("cutlass_library/source/include");
    dir.join("cute").is_dir().then_some(dir)
}
