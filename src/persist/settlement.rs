//! The settlement mailbox: each cluster node's inbox of settlement reports, a Redis
//! stream `giftstream:{ledger-<owner>}:settlements` in the owner's journal slot (so a
//! node reports while its peer is down, and needs no peer's address or token), and the
//! format of its entries. It only stores and reads: what to report and how a report is
//! applied is the server's settlement logic (`server::settlement`).

use bincode::{Decode, Encode};

use crate::persist::journal::JournalError;
use crate::persist::redis::RedisConn;
use crate::protocol;

/// Version of [`InboxEntry`].
const INBOX_VERSION: u8 = 2;

/// A creator's owner's inbox.
pub fn inbox_key(owner: &str) -> String {
    format!("giftstream:{{ledger-{owner}}}:settlements")
}

/// `(creator, whole diamonds, billionths of one)` credited in total.
pub type Report = (u64, u64, u32);

/// One inbox entry: a node's reports to the owner, `(creator, whole diamonds, billionths)`
/// credited in total (version 2; version 1 entries had no fraction).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct InboxEntry {
    pub version: u8,
    /// The reporting node's name.
    pub from: String,
    pub reports: Vec<Report>,
}

/// An inbox entry of version 1: whole diamonds only.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct InboxEntryV1 {
    version: u8,
    from: String,
    reports: Vec<(u64, u64)>,
}

impl InboxEntry {
    /// An entry of the current version.
    pub fn new(from: &str, reports: Vec<Report>) -> InboxEntry {
        InboxEntry {
            version: INBOX_VERSION,
            from: from.to_owned(),
            reports,
        }
    }

    /// Reads an entry of any version this build reads (the version is its first byte).
    fn decode(bytes: &[u8]) -> Result<InboxEntry, String> {
        let entry: InboxEntry = match bytes.first() {
            Some(1) => {
                let v1: InboxEntryV1 = protocol::decode(bytes).map_err(|e| e.to_string())?;
                InboxEntry {
                    version: INBOX_VERSION,
                    from: v1.from,
                    reports: v1.reports.into_iter().map(|(c, d)| (c, d, 0)).collect(),
                }
            }
            _ => protocol::decode(bytes).map_err(|e| e.to_string())?,
        };
        if entry.version != INBOX_VERSION {
            return Err(format!("inbox entry version {}", entry.version));
        }
        Ok(entry)
    }
}

/// An inbox entry as read: its stream id, and the entry, or why it cannot be read.
pub type Received = (String, Result<InboxEntry, String>);

/// The inboxes of a cluster's nodes, on one connection.
pub struct Mailbox {
    conn: RedisConn,
}

impl Mailbox {
    pub fn new(conn: RedisConn) -> Mailbox {
        Mailbox { conn }
    }

    /// How many entries wait in `owner`'s inbox.
    pub async fn len(&mut self, owner: &str) -> Result<u64, JournalError> {
        redis::cmd("XLEN")
            .arg(inbox_key(owner))
            .query_async(&mut self.conn)
            .await
            .map_err(JournalError::from)
    }

    /// Appends `entry` to `owner`'s inbox.
    pub async fn post(&mut self, owner: &str, entry: &InboxEntry) -> Result<(), JournalError> {
        let _: String = redis::cmd("XADD")
            .arg(inbox_key(owner))
            .arg("*")
            .arg("r")
            .arg(protocol::encode(entry))
            .query_async(&mut self.conn)
            .await
            .map_err(JournalError::from)?;
        Ok(())
    }

    /// Up to `count` entries of `owner`'s inbox after the entry id `after`, in order.
    pub async fn read(
        &mut self,
        owner: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<Received>, JournalError> {
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let page: Vec<Entry> = redis::cmd("XRANGE")
            .arg(inbox_key(owner))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await
            .map_err(JournalError::from)?;
        Ok(page
            .into_iter()
            .map(|(id, fields)| {
                let entry = fields
                    .iter()
                    .find(|(f, _)| f == "r")
                    .map(|(_, v)| v)
                    .ok_or_else(|| "no field r".to_owned())
                    .and_then(|bytes| InboxEntry::decode(bytes));
                (id, entry)
            })
            .collect())
    }

    /// Deletes the entry `id` from `owner`'s inbox (once its reports are durable).
    pub async fn delete(&mut self, owner: &str, id: &str) -> Result<(), JournalError> {
        let _: u64 = redis::cmd("XDEL")
            .arg(inbox_key(owner))
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .map_err(JournalError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_entries_of_version_1_read_as_whole_diamonds_and_others_are_refused() {
        let entry = InboxEntry::new("b", vec![(7, 5, 500_000_000)]);
        assert_eq!(InboxEntry::decode(&protocol::encode(&entry)), Ok(entry));
        let v1 = protocol::encode(&InboxEntryV1 {
            version: 1,
            from: "b".to_owned(),
            reports: vec![(7, 5)],
        });
        assert_eq!(
            InboxEntry::decode(&v1),
            Ok(InboxEntry::new("b", vec![(7, 5, 0)]))
        );
        let v3 = protocol::encode(&InboxEntry {
            version: 3,
            ..InboxEntry::new("b", vec![])
        });
        assert_eq!(
            InboxEntry::decode(&v3),
            Err("inbox entry version 3".to_owned())
        );
    }
}
