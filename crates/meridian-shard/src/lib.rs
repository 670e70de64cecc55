//! A Meridian shard node.
pub mod command;
pub mod config;
pub mod digest;
pub mod keys;
pub mod limits;
pub mod state_machine;
