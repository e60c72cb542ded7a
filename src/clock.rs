//! The one place ledger time is read: [`now`], the system clock as a [`Stamp`]. The
//! engine never reads a clock (time comes in with each batch, and replay uses the
//! journaled stamps); the service stamps batches, reads and economy changes with this.

use crate::engine::Stamp;

/// Now, from the system clock, in UTC milliseconds since the Unix epoch (0 for a clock
/// before 1970).
pub fn now() -> Stamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Stamp(ms)
}
