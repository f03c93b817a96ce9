//! The CLI end to end on NdArray (no GPU needed).

use std::process::Command;

fn profile(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_natten-profile"))
        .args(args)
        .output()
        .expect("natten-profile runs")
}

#[test]
fn dry_run_lists_what_can_run_without_running() {
    let out = profile(&[
        "-i",
        "16",
        "16",
        "-w",
        "5",
        "5",
        "--dim",
        "8",
        "--backend",
        "ndarray",
        "--dry-run",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["implementations"], serde_json::json!(["reference"]));
    assert_eq!(report["forward_tiles"], serde_json::json!([]));
}

#[test]
fn impossible_arguments_name_the_argument_and_the_rule() {
    let out = profile(&[
        "-i",
        "16",
        "-w",
        "5",
        "--heads",
        "3",
        "--heads-kv",
        "2",
        "--backend",
        "ndarray",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--heads-kv") && err.contains("divide"),
        "{err}"
    );
    let out = profile(&["-i", "8", "-w", "9", "--backend", "ndarray"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("9"), "{err}");
}

#[test]
fn times_a_small_problem_on_ndarray() {
    let out = profile(&[
        "-i",
        "12",
        "-w",
        "3",
        "--dim",
        "4",
        "--backend",
        "ndarray",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(report["timing"]["forward_ms"].as_f64().unwrap() > 0.0);
}

/// `--back-to-back` times calls enqueued between two syncs, forward and forward+backward, and
/// says so in the table and the JSON.
#[test]
fn times_calls_back_to_back() {
    let args = |json: bool| {
        let mut args = vec![
            "-i",
            "12",
            "-w",
            "3",
            "--dim",
            "4",
            "--backend",
            "ndarray",
            "--warmup",
            "1",
            "--iters",
            "3",
            "--backprop",
            "--no-dense",
            "--back-to-back",
        ];
        if json {
            args.push("--json");
        }
        args
    };
    let out = profile(&args(true));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["back_to_back"], serde_json::json!(true));
    assert!(report["timing"]["forward_ms"].as_f64().unwrap() > 0.0);
    assert!(report["timing"]["forward_backward_ms"].as_f64().unwrap() > 0.0);
    let table = profile(&args(false));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("calls back to back"), "{text}");
}

#[test]
fn extra_kv_and_the_dense_baseline() {
    let args = [
        "-i",
        "6",
        "6",
        "-w",
        "3",
        "--dim",
        "4",
        "--heads",
        "2",
        "--extra-kv",
        "3",
        "--backend",
        "ndarray",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--backprop",
        "--json",
    ];
    let out = profile(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["extra_kv"], 3);
    assert!(report["dense"]["forward_ms"].as_f64().unwrap() > 0.0);
    let speedup = report["forward_speedup_over_dense"].as_f64().unwrap();
    let want = report["dense"]["forward_ms"].as_f64().unwrap()
        / report["timing"]["forward_ms"].as_f64().unwrap();
    assert!((speedup - want).abs() < 1e-9 * want, "{speedup} vs {want}");
    assert!(
        report["forward_backward_speedup_over_dense"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // 36 queries x (9 neighbours + 3 extra) pairs x 2 heads x 2 * (4 + 4) FLOPs.
    let tflops = report["forward_tflops_count"].as_f64().unwrap();
    assert!(
        (tflops * 1e12 - (36 * 12 * 2 * 16) as f64).abs() < 1e-3,
        "{tflops}"
    );

    let mut no_dense = args.to_vec();
    no_dense.push("--no-dense");
    let out = profile(&no_dense);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(report["dense"].is_null());
}

#[test]
fn optimize_needs_tiled_kernels() {
    let out = profile(&[
        "-i",
        "8",
        "8",
        "-w",
        "3",
        "--dim",
        "8",
        "--backend",
        "ndarray",
        "--optimize",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--optimize") && err.contains("no tiled kernels"),
        "{err}"
    );
}

/// `--optimize` on wgpu writes the fastest configuration to `$BURN_NATTEN_CACHE`; a later plain
/// run (`NaBackend::Auto`, no tiles given) takes it from there.
#[test]
fn optimize_stores_the_best_tiles_and_auto_uses_them() {
    let dir = std::env::temp_dir().join(format!("natten-profile-cache-{}", std::process::id()));
    let cache = dir.join("tiles.json");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-i",
            "8",
            "8",
            "-w",
            "3",
            "--dim",
            "16",
            "--backend",
            "wgpu",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--json",
        ];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_natten-profile"))
            .args(&args)
            .env("BURN_NATTEN_CACHE", &cache)
            .output()
            .expect("natten-profile runs")
    };
    let out = run(&["--optimize"]);
    if !out.status.success() && std::env::var("BURN_NATTEN_REQUIRE_WGPU").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: --optimize on wgpu failed (no adapter?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let trials = report["trials"].as_array().expect("trials");
    let best = &trials[report["best"].as_u64().unwrap() as usize];
    let fastest = trials
        .iter()
        .map(|t| t["timing"]["forward_ms"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best["timing"]["forward_ms"].as_f64().unwrap(), fastest);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).expect("cache written")).unwrap();
    assert_eq!(stored["entries"][0]["q_tile"], best["q_tile"]);

    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        report["tiles_from_cache"],
        serde_json::json!([best["q_tile"], best["kv_tile"]])
    );
    std::fs::remove_dir_all(&dir).ok();
}
