//! The one error type of squish-core: every failure names what it was doing and with which file.

use std::path::PathBuf;

/// Result alias used across squish-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in squish-core. Messages are meant for a person: they name the
/// file, the tensor or key, and the numbers that disagree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named path.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "renaming" …).
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration file that does not parse or does not validate.
    #[error("config {path}: {message}")]
    Config {
        /// The config file (or `<string>` when parsed from memory).
        path: PathBuf,
        /// What is wrong, with line/column and key where known.
        message: String,
    },
    /// A model or tokenizer file whose bytes are not what its format says.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the numbers that disagree.
        message: String,
    },
    /// A tensor with the wrong shape, dtype, or values (NaN/Inf).
    #[error("tensor {name}: {message}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A request that cannot be honoured (bad argument, unsupported combination).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
    /// An [`Error::Tensor`] for the tensor `name`.
    pub fn tensor(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            message: message.into(),
        }
    }
    /// An [`Error::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}
