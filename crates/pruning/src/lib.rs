//! squish-prune: structured pruning (work in progress).
#![deny(missing_docs)]
