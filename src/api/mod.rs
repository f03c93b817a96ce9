//! The public functions.

mod attention;
mod checks;
mod merge;
mod na;

pub use attention::{attention, attention_with_lse};
pub use merge::merge_attentions;
pub use na::{
    na_backward_tile_configs, na_tile_configs, na1d, na1d_with_extra_kv, na1d_with_lse, na2d,
    na2d_with_extra_kv, na2d_with_lse, na3d, na3d_with_extra_kv, na3d_with_lse,
};
