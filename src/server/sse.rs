//! The live feed: accepted gifts and goal progress per stream, published from committed
//! runs. Bounded subscribers per stream; each subscriber has a bounded buffer and is
//! disconnected when it falls behind: ingestion never waits for a reader.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::engine::{Engine, Event, LogEntry, Status, StreamId};
use crate::telemetry;

/// One feed message (the SSE `event:` name and its JSON `data:`, which repeats the name
/// in its `event` field).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FeedMessage {
    Gift {
        event_id: String,
        seq: u64,
        sender: u64,
        creator: u64,
        stream: u64,
        gift: String,
        count: u32,
        coins: u64,
    },
    Goal {
        stream: u64,
        creator: Option<u64>,
        coins_received: u128,
        coins_target: Option<u64>,
        progress: u128,
    },
    /// The subscriber fell too far behind and is disconnected after this message.
    Dropped {
        /// Messages it missed.
        missed: u64,
    },
}

impl FeedMessage {
    pub fn name(&self) -> &'static str {
        match self {
            FeedMessage::Gift { .. } => "gift",
            FeedMessage::Goal { .. } => "goal",
            FeedMessage::Dropped { .. } => "dropped",
        }
    }

    pub fn goal_of(engine: &Engine, stream: StreamId) -> FeedMessage {
        let s = engine.stream(stream);
        FeedMessage::Goal {
            stream: stream.0,
            creator: s.creator.map(|c| c.0),
            coins_received: s.coins_received,
            coins_target: s.goal.map(|g| g.0),
            progress: s.coins_received,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySubscribers;

pub struct Feeds {
    /// A channel per stream with subscribers (removed with its last one).
    streams: Mutex<HashMap<StreamId, broadcast::Sender<Arc<FeedMessage>>>>,
    subscribers: AtomicUsize,
    per_stream_max: usize,
    subscribers_max: usize,
    buffer: usize,
}

/// Held by a subscriber; counts it out when dropped, and frees its stream's channel
/// (its buffer) when it was the last one.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<FeedMessage>>,
    stream: StreamId,
    feeds: Arc<Feeds>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        {
            let mut streams = self.feeds.streams.lock();
            // Our receiver is still alive here: the last one leaves a count of 1.
            if streams
                .get(&self.stream)
                .is_some_and(|s| s.receiver_count() <= 1)
            {
                streams.remove(&self.stream);
            }
        }
        let n = self.feeds.subscribers.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(telemetry::SSE_SUBSCRIBERS).set(n as f64);
    }
}

impl Feeds {
    pub fn new(per_stream_max: usize, subscribers_max: usize, buffer: usize) -> Arc<Feeds> {
        Arc::new(Feeds {
            streams: Mutex::new(HashMap::new()),
            subscribers: AtomicUsize::new(0),
            per_stream_max,
            subscribers_max,
            buffer,
        })
    }

    /// Streams that have a channel now (one per stream with subscribers).
    pub fn streams_held(&self) -> usize {
        self.streams.lock().len()
    }

    pub fn subscribe(
        self: &Arc<Self>,
        stream: StreamId,
    ) -> Result<Subscription, TooManySubscribers> {
        let mut streams = self.streams.lock();
        if self.subscribers.load(Ordering::Acquire) >= self.subscribers_max {
            metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "sse_subscribers")
                .increment(1);
            return Err(TooManySubscribers);
        }
        let sender = streams
            .entry(stream)
            .or_insert_with(|| broadcast::channel(self.buffer).0);
        if sender.receiver_count() >= self.per_stream_max {
            metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "sse_subscribers_per_stream").increment(1);
            return Err(TooManySubscribers);
        }
        let receiver = sender.subscribe();
        let n = self.subscribers.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(telemetry::SSE_SUBSCRIBERS).set(n as f64);
        Ok(Subscription {
            receiver,
            stream,
            feeds: self.clone(),
        })
    }

    /// Publishes the accepted gifts of a committed run, then the goal progress of each
    /// stream they touched. Costs one atomic load when nobody listens.
    pub fn publish(&self, engine: &Engine, entries: &[LogEntry]) {
        if self.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut streams = self.streams.lock();
        streams.retain(|_, s| s.receiver_count() > 0);
        let mut touched = Vec::new();
        for e in entries {
            let (Event::Gift(g), Status::Accepted(effect)) = (&e.event, e.outcome.status) else {
                continue;
            };
            let Some(sender) = streams.get(&g.stream) else {
                continue;
            };
            // The economy the gift was applied under (a change may have come after it).
            let economy = engine.economy_at(e.seq);
            let spec = economy.gifts.get(g.gift.0 as usize);
            let coins = match effect {
                crate::engine::Effect::Coins(_) => {
                    spec.map_or(0, |spec| spec.coins * u64::from(g.count))
                }
                _ => 0,
            };
            let gift = spec.map_or_else(String::new, |s| s.id.clone());
            // A full buffer never blocks: the lagging receiver sees `Lagged` and is dropped.
            let _ = sender.send(Arc::new(FeedMessage::Gift {
                event_id: uuid::Uuid::from_u128(g.id.0).to_string(),
                seq: e.seq,
                sender: g.sender.0,
                creator: g.creator.0,
                stream: g.stream.0,
                gift,
                count: g.count,
                coins,
            }));
            if !touched.contains(&g.stream) {
                touched.push(g.stream);
            }
        }
        for e in entries {
            if let (Event::StreamGoal(g), Status::Accepted(_)) = (&e.event, e.outcome.status)
                && streams.contains_key(&g.stream)
                && !touched.contains(&g.stream)
            {
                touched.push(g.stream);
            }
        }
        for stream in touched {
            if let Some(sender) = streams.get(&stream) {
                let _ = sender.send(Arc::new(FeedMessage::goal_of(engine, stream)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #34: each subscribed stream id held its ~32 KB buffer until a commit
    /// published with a subscriber present; 4,000 subscribe/close cycles on distinct ids
    /// grew RSS by 130 MB. Now the last subscriber frees it, and subscribers are capped in
    /// all, not only per stream.
    #[test]
    fn the_last_subscriber_frees_its_stream_and_subscribers_are_capped_in_all() {
        let feeds = Feeds::new(2, 3, 1024);
        for id in 0..4_000 {
            let sub = feeds.subscribe(StreamId(id)).unwrap();
            drop(sub);
        }
        assert_eq!(feeds.streams_held(), 0, "every stream's channel freed");

        let a = feeds.subscribe(StreamId(1)).unwrap();
        let b = feeds.subscribe(StreamId(1)).unwrap();
        assert!(feeds.subscribe(StreamId(1)).is_err(), "per stream");
        let c = feeds.subscribe(StreamId(2)).unwrap();
        assert!(feeds.subscribe(StreamId(3)).is_err(), "in all");
        assert_eq!(feeds.streams_held(), 2, "no channel left by a refusal");
        drop(a);
        assert_eq!(feeds.streams_held(), 2, "stream 1 still has b");
        drop(b);
        assert_eq!(feeds.streams_held(), 1);
        let d = feeds.subscribe(StreamId(3)).unwrap();
        drop((c, d));
        assert_eq!(feeds.streams_held(), 0);
    }
}
