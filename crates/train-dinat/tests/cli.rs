//! The training example end to end on NdArray: a tiny run writes its plot and reports its
//! accuracy; impossible sizes are refused with the argument named.

use std::process::Command;

fn train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_train-dinat"))
        .args(args)
        .output()
        .expect("train-dinat runs")
}

#[test]
fn a_tiny_run_writes_the_plot_and_reports_accuracy() {
    let png = std::env::temp_dir().join(format!("train-dinat-test-{}.png", std::process::id()));
    let out = train(&[
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--valid-size",
        "32",
        "--plot",
        png.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("final validation accuracy: "))
        .and_then(|rest| rest.split('%').next())
        .and_then(|v| v.parse().ok())
        .expect("an accuracy line");
    assert!((0.0..=100.0).contains(&accuracy), "{accuracy}");
    assert!(stdout.contains("epoch 1 train"), "{stdout}");
    let bytes = std::fs::read(&png).expect("the plot was written");
    std::fs::remove_file(&png).ok();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
}

#[test]
fn a_grid_too_small_for_the_dilated_window_is_refused() {
    // 8x8 images are 4x4 tokens: a 3x3 window at dilation 2 needs 6 per side.
    let out = train(&["--image-size", "8", "--epochs", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("image_size"), "{stderr}");
}

#[test]
fn a_failed_accuracy_bar_is_an_error() {
    let out = train(&[
        "--epochs",
        "1",
        "--train-size",
        "16",
        "--valid-size",
        "16",
        "--plot",
        std::env::temp_dir()
            .join("train-dinat-test-bar.png")
            .to_str()
            .expect("utf-8 path"),
        "--min-accuracy",
        "100.5",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-accuracy"));
}
