//! Persistence: the commit path between the engine's log and durable storage.
//!
//! Architecture Invariant: only [`journal`] decides when an outcome is durable. The
//! protocol code waits on a [`journal::CommitHandle`]; which [`journal::Journal`] backs
//! it (in memory now, Redis with the durability issue) is invisible to it.

pub mod journal;
pub mod redis;
pub mod snapshot;
