//! Worked examples of design.md / NATTEN's docs, and property tests of the window invariants.

use crate::neighborhood::{flat_index, neighbors, unflatten};
use crate::validate::validate_axes;
use crate::window::{group_len, inverse_window_range, window_start_end};
use crate::{AxisParams, NeighborTable, axis_window};
use proptest::prelude::*;

fn axis(k: usize, s: usize, d: usize, causal: bool) -> AxisParams {
    AxisParams {
        kernel_size: k,
        stride: s,
        dilation: d,
        causal,
    }
}

fn keys(a: AxisParams, len: usize, x: usize) -> Vec<usize> {
    axis_window(&a, len, x).keys().collect()
}

fn all_keys(a: AxisParams, len: usize) -> Vec<Vec<usize>> {
    (0..len).map(|x| keys(a, len, x)).collect()
}

#[test]
fn worked_examples_design_md() {
    assert_eq!(keys(axis(3, 1, 1, false), 7, 0), [0, 1, 2]);
    assert_eq!(keys(axis(3, 1, 1, false), 7, 3), [2, 3, 4]);
    assert_eq!(keys(axis(3, 1, 1, false), 7, 6), [4, 5, 6]);
    assert_eq!(keys(axis(4, 1, 1, false), 8, 3), [1, 2, 3, 4]);
    assert_eq!(keys(axis(3, 1, 2, false), 9, 7), [3, 5, 7]);
    assert_eq!(keys(axis(3, 1, 2, false), 9, 8), [4, 6, 8]);
    assert_eq!(keys(axis(3, 1, 1, true), 7, 0), [0]);
    assert_eq!(keys(axis(3, 1, 1, true), 7, 4), [2, 3, 4]);
    assert_eq!(keys(axis(4, 3, 1, false), 10, 9), [6, 7, 8, 9]);
}

#[test]
fn worked_examples_full_tables() {
    let r = |v: std::ops::Range<usize>| v.collect::<Vec<_>>();
    assert_eq!(
        all_keys(axis(3, 1, 1, false), 7),
        [
            [0, 1, 2],
            [0, 1, 2],
            [1, 2, 3],
            [2, 3, 4],
            [3, 4, 5],
            [4, 5, 6],
            [4, 5, 6]
        ]
    );
    let even = all_keys(axis(4, 1, 1, false), 8);
    assert_eq!(even[0..3], [r(0..4), r(0..4), r(0..4)]);
    assert_eq!(even[3..], [r(1..5), r(2..6), r(3..7), r(4..8), r(4..8)]);
    assert_eq!(
        all_keys(axis(3, 1, 2, false), 8),
        [
            [0, 2, 4],
            [1, 3, 5],
            [0, 2, 4],
            [1, 3, 5],
            [2, 4, 6],
            [3, 5, 7],
            [2, 4, 6],
            [3, 5, 7]
        ]
    );
    assert_eq!(
        all_keys(axis(3, 1, 2, false), 9),
        [
            [0, 2, 4],
            [1, 3, 5],
            [0, 2, 4],
            [1, 3, 5],
            [2, 4, 6],
            [3, 5, 7],
            [4, 6, 8],
            [3, 5, 7],
            [4, 6, 8]
        ]
    );
    assert_eq!(
        all_keys(axis(3, 1, 1, true), 7),
        [
            r(0..1),
            r(0..2),
            r(0..3),
            r(1..4),
            r(2..5),
            r(3..6),
            r(4..7)
        ]
    );
    assert_eq!(
        all_keys(axis(4, 2, 1, false), 8),
        [
            r(0..4),
            r(0..4),
            r(1..5),
            r(1..5),
            r(3..7),
            r(3..7),
            r(4..8),
            r(4..8)
        ]
    );
    let blocked = all_keys(axis(4, 4, 1, false), 8);
    assert!(
        blocked[..4].iter().all(|w| *w == r(0..4)) && blocked[4..].iter().all(|w| *w == r(4..8))
    );
    assert_eq!(
        all_keys(axis(3, 2, 1, true), 8),
        [
            r(0..1),
            r(0..2),
            r(1..3),
            r(1..4),
            r(3..5),
            r(3..6),
            r(5..7),
            r(5..8)
        ]
    );
    let partial = all_keys(axis(4, 3, 1, false), 10);
    assert_eq!(
        partial,
        [
            r(0..4),
            r(0..4),
            r(0..4),
            r(2..6),
            r(2..6),
            r(2..6),
            r(5..9),
            r(5..9),
            r(5..9),
            r(6..10)
        ]
    );
}

#[test]
fn worked_example_2d_product() {
    let axes = [axis(3, 1, 1, false), axis(4, 1, 1, false)];
    let got = neighbors(&[7, 8], &axes, &[0, 7]);
    let want: Vec<usize> = [0, 1, 2]
        .iter()
        .flat_map(|x| [4, 5, 6, 7].map(|y| x * 8 + y))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn neighbor_table_matches_enumeration() {
    let spatial = [5, 6, 4];
    let axes = [
        axis(3, 2, 1, true),
        axis(2, 1, 2, false),
        axis(3, 3, 1, true),
    ];
    let table = NeighborTable::new(&spatial, &axes);
    assert_eq!(table.window, 18);
    let valid = table
        .valid
        .as_ref()
        .expect("causal axes give a validity mask");
    for q in 0..table.tokens {
        let row = q * table.window..(q + 1) * table.window;
        let mut got: Vec<usize> = row
            .clone()
            .filter(|&i| valid[i])
            .map(|i| table.indices[i] as usize)
            .collect();
        got.sort();
        assert_eq!(
            got,
            neighbors(&spatial, &axes, &unflatten(q, &spatial)),
            "query {q}"
        );
        // Padded slots still hold an in-range key (safe to gather).
        assert!(
            row.clone()
                .all(|i| (table.indices[i] as usize) < table.tokens)
        );
    }
}

#[test]
fn flat_index_round_trip() {
    let shape = [3, 4, 5];
    for i in 0..60 {
        assert_eq!(flat_index(&unflatten(i, &shape), &shape), i);
    }
}

#[test]
fn validation_names_argument_and_rule() {
    let check = |spatial: &[usize], axes: &[AxisParams], argument: &str, needle: &str| {
        let err = validate_axes(spatial, axes).expect_err("must be rejected");
        assert_eq!(err.argument(), Some(argument), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    check(&[8], &[axis(1, 1, 1, false)], "kernel_size", ">= 2");
    check(&[8], &[axis(3, 0, 1, false)], "stride", ">= 1");
    check(&[8], &[axis(3, 1, 0, false)], "dilation", ">= 1");
    check(
        &[8],
        &[axis(3, 4, 1, false)],
        "stride",
        "cannot be larger than kernel size",
    );
    check(&[8], &[axis(3, 1, 3, false)], "dilation", "3 x 3 > 8");
    check(
        &[8, 8],
        &[axis(3, 1, 1, false)],
        "kernel_size",
        "one entry per spatial axis",
    );
    assert!(validate_axes(&[8], &[axis(4, 4, 2, true)]).is_ok());
}

fn arb_axis() -> impl Strategy<Value = (AxisParams, usize)> {
    (2usize..8, 1usize..4, any::<bool>(), 0usize..12).prop_flat_map(|(k, d, causal, extra)| {
        (1..=k).prop_map(move |s| (axis(k, s, d, causal), k * d + extra))
    })
}

proptest! {
    #[test]
    fn non_causal_windows_hold_exactly_k((a, len) in arb_axis()) {
        let a = AxisParams { causal: false, ..a };
        for x in 0..len {
            let w = axis_window(&a, len, x);
            prop_assert_eq!(w.len(), a.kernel_size);
        }
    }

    #[test]
    fn causal_windows_end_at_the_query((a, len) in arb_axis()) {
        let a = AxisParams { causal: true, ..a };
        for x in 0..len {
            let w = axis_window(&a, len, x);
            prop_assert_eq!(w.keys().last(), Some(x));
            prop_assert!(!w.is_empty() && w.len() <= a.kernel_size);
        }
    }

    #[test]
    fn starts_are_monotone_within_a_group((a, len) in arb_axis()) {
        for g in 0..a.dilation {
            let starts: Vec<usize> = (g..len).step_by(a.dilation).map(|x| axis_window(&a, len, x).start).collect();
            prop_assert!(starts.windows(2).all(|p| p[0] <= p[1]), "{:?}", starts);
            let ends: Vec<usize> = (g..len).step_by(a.dilation).map(|x| axis_window(&a, len, x).end).collect();
            prop_assert!(ends.windows(2).all(|p| p[0] <= p[1]), "{:?}", ends);
        }
    }

    #[test]
    fn keys_share_the_query_dilation_group_and_stay_in_range((a, len) in arb_axis()) {
        for x in 0..len {
            for key in axis_window(&a, len, x).keys() {
                prop_assert_eq!(key % a.dilation, x % a.dilation);
                prop_assert!(key < len);
            }
        }
    }

    #[test]
    fn stride_groups_share_their_window((a, len) in arb_axis()) {
        let a = AxisParams { causal: false, ..a };
        for x in 0..len {
            let i = x / a.dilation;
            let first = (i / a.stride) * a.stride * a.dilation + x % a.dilation;
            prop_assert_eq!(axis_window(&a, len, x).start, axis_window(&a, len, first).start);
        }
    }

    #[test]
    fn inverse_windows_are_the_queries_that_see_the_key((a, len) in arb_axis()) {
        for g in 0..a.dilation {
            let glen = group_len(len, a.dilation, g);
            for j in 0..glen {
                let seeing: Vec<usize> = (0..glen)
                    .filter(|&i| {
                        let (start, end) = window_start_end(&a, i, glen);
                        start <= j && j < end
                    })
                    .collect();
                let (lo, hi) = inverse_window_range(&a, j, glen);
                prop_assert_eq!((lo..hi.max(lo)).collect::<Vec<_>>(), seeing, "key {}", j);
            }
        }
    }

    #[test]
    fn queries_see_themselves_when_stride_is_one((a, len) in arb_axis()) {
        let a = AxisParams { stride: 1, ..a };
        for x in 0..len {
            prop_assert!(axis_window(&a, len, x).contains(x));
        }
    }
}
