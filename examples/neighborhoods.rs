//! Draws the neighbourhood of a query on a 2-D token grid as SVG, from `natten-core`'s window
//! rule (the book's Semantics pictures are this program's output).
//!
//! ```text
//! cargo run --example neighborhoods -- book/src/pictures
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use burn_natten::AxisParams;
use burn_natten::natten_core::neighborhood::{flat_index, neighbors};

/// One picture: a grid, the window parameters of its two axes, and the query.
struct Picture {
    name: &'static str,
    caption: &'static str,
    spatial: [usize; 2],
    axes: [AxisParams; 2],
    query: [usize; 2],
}

const CELL: usize = 24;

fn axis(kernel_size: usize, stride: usize, dilation: usize, causal: bool) -> AxisParams {
    AxisParams {
        kernel_size,
        stride,
        dilation,
        causal,
    }
}

fn pictures() -> Vec<Picture> {
    let plain = axis(3, 1, 1, false);
    vec![
        Picture {
            name: "window-3x3",
            caption: "kernel 3x3, query (4, 4)",
            spatial: [9, 9],
            axes: [plain, plain],
            query: [4, 4],
        },
        Picture {
            name: "window-3x3-corner",
            caption: "kernel 3x3, query (0, 0)",
            spatial: [9, 9],
            axes: [plain, plain],
            query: [0, 0],
        },
        Picture {
            name: "dilation-2",
            caption: "kernel 3x3, dilation 2",
            spatial: [9, 9],
            axes: [axis(3, 1, 2, false), axis(3, 1, 2, false)],
            query: [4, 4],
        },
        Picture {
            name: "causal-both",
            caption: "kernel 3x3, causal",
            spatial: [9, 9],
            axes: [axis(3, 1, 1, true), axis(3, 1, 1, true)],
            query: [4, 4],
        },
        Picture {
            name: "stride-3",
            caption: "kernel 3x3, stride 3",
            spatial: [9, 9],
            axes: [axis(3, 3, 1, false), axis(3, 3, 1, false)],
            query: [3, 5],
        },
    ]
}

/// The SVG of one picture: the query dark, its neighbours light, the other tokens white.
fn svg(p: &Picture) -> String {
    let [rows, cols] = p.spatial;
    let keys = neighbors(&p.spatial, &p.axes, &p.query);
    let query = flat_index(&p.query, &p.spatial);
    let (width, height) = (cols * CELL, rows * CELL + 28);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    for r in 0..rows {
        for c in 0..cols {
            let index = r * cols + c;
            let fill = if index == query {
                "#1f4e9c"
            } else if keys.binary_search(&index).is_ok() {
                "#9cc3f0"
            } else {
                "#ffffff"
            };
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{fill}\" \
                 stroke=\"#888888\"/>",
                c * CELL,
                r * CELL
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"2\" y=\"{}\">{} ({} keys)</text>\n</svg>",
        rows * CELL + 18,
        p.caption,
        keys.len()
    );
    out
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "book/src/pictures".into()),
    );
    std::fs::create_dir_all(&dir)?;
    for p in pictures() {
        let path = dir.join(format!("{}.svg", p.name));
        std::fs::write(&path, svg(&p))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
