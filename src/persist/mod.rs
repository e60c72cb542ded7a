//! Persistence: the commit path between the engine's log and durable storage.
//!
//! Architecture Invariant: only [`journal`] decides when an outcome is durable. The
//! protocol code waits on a [`journal::CommitHandle`]; which [`journal::Journal`] backs
//! it ([`journal::MemoryJournal`] or [`redis::RedisJournal`]) is invisible to it.
//! [`snapshot`] writes and reads ledger snapshots; [`recovery`] is start-up recovery
//! (newest valid snapshot, then the journal after it; it builds the engine). [`replica`]
//! takes snapshots from a second engine that follows the journal, instead of by fork.
//! [`read_model`] projects committed runs into the Redis read model and reads it back
//! for the HTTP routes; [`downstream`] writes the change stream and the durable
//! history. Both follow committed runs off the ack path ([`follow`], on a thread of
//! their own: [`thread`]).

pub mod downstream;
pub mod follow;
pub mod journal;
pub mod read_model;
pub mod recovery;
pub mod redis;
pub mod replica;
pub mod settlement;
pub mod snapshot;
pub mod thread;
