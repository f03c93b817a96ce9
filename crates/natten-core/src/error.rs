//! The one error type of the library.

use thiserror::Error;

/// Everything that can go wrong in a neighborhood-attention call.
///
/// Invalid user input is reported as [`NattenError::InvalidArgument`], naming the argument and
/// the rule it broke; a valid problem that the chosen backend cannot run is
/// [`NattenError::Unsupported`]; a failure inside a device runtime is
/// [`NattenError::Backend`]. Nothing in this library panics on user input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NattenError {
    /// An argument broke one of NATTEN's rules.
    #[error("invalid `{argument}`: {rule}")]
    InvalidArgument {
        /// The argument, as the user wrote it (`kernel_size`, `q`, `extra_k`, ...).
        argument: &'static str,
        /// The rule that was broken, with the offending values.
        rule: String,
    },
    /// The problem is valid, but the explicitly chosen backend cannot run it.
    #[error("backend `{backend}` cannot run this problem: {reason}")]
    Unsupported {
        /// The backend that was asked for.
        backend: &'static str,
        /// Why it cannot run the problem.
        reason: String,
    },
    /// A device runtime reported an error while running a kernel.
    #[error("backend error: {0}")]
    Backend(String),
}

impl NattenError {
    /// Shorthand for [`NattenError::InvalidArgument`].
    pub fn invalid(argument: &'static str, rule: impl Into<String>) -> Self {
        Self::InvalidArgument {
            argument,
            rule: rule.into(),
        }
    }

    /// The argument named by an [`NattenError::InvalidArgument`], if this is one.
    pub fn argument(&self) -> Option<&'static str> {
        match self {
            Self::InvalidArgument { argument, .. } => Some(argument),
            _ => None,
        }
    }
}
