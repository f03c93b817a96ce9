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
