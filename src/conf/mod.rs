//! Configuration values, parsed and checked without nginx types.

pub mod cluster;
pub mod provider;
