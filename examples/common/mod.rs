//! Pieces the examples share.

pub mod framing;
