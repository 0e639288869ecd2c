//! squish-mixed: mixed precision (work in progress).
#![deny(missing_docs)]
