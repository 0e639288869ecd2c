//! Error type shared by every constructor and kernel entry point.

/// Everything that can go wrong when building a packed weight or calling a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A buffer has the wrong number of elements.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which buffer (e.g. "qweight", "scales", "x").
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length actually passed.
        got: usize,
    },
    /// A dimension is zero or otherwise unusable.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// A quantization group size of zero.
    #[error("group size must be >= 1, got {0}")]
    Group(usize),
    /// A stored code or zero point outside its format's range.
    #[error("{what} out of range at index {index}: {value}")]
    Range {
        /// Which buffer holds the bad value.
        what: &'static str,
        /// Flat index of the first bad value.
        index: usize,
        /// The bad value.
        value: i64,
    },
    /// A scale that is NaN or infinite.
    #[error("scale at index {0} is not finite")]
    NonFiniteScale(usize),
    /// Two weights that must share a format/shape (e.g. SwiGLU gate and up) do not.
    #[error("incompatible weights: {0}")]
    Incompatible(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Returns an error unless `got == expected`.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            got,
        })
    }
}
