//! Bounded top-K lists that stay exact because the scores they rank only grow.

/// The K best `(score, id)` pairs, best first: higher score first, then lower id.
///
/// Exactness: every score ranked here (coins gifted, diamonds credited) only ever
/// increases, and every increase is offered. An id outside the list can only enter by
/// growing, at which point it is offered; so the list always equals the top K of all
/// current scores, whatever the order of the offers. That is what makes replay and
/// merging across shards reproduce it exactly.
///
/// The score type `S` is `u128` (diamonds, and the read model's copies) or `u64` (the
/// sender shards' gifter lists, whose totals are `u64`: 16 bytes an entry instead of 32).
/// Both encode a score as a varint of its value, so a list written with `u128` scores
/// that fit 64 bits reads back as `TopK<u64>` (a wider one is refused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopK<S = u128> {
    entries: Vec<(S, u64)>,
}

impl<S> Default for TopK<S> {
    fn default() -> Self {
        TopK {
            entries: Vec::new(),
        }
    }
}

/// What an offer did to a [`TopK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Not good enough: the list is unchanged.
    Unranked,
    /// Listed (or moved up), pushing `evicted` out when the list was full.
    Ranked { evicted: Option<u64> },
}

/// True when `a` ranks before `b`.
fn ranks_before<S: Ord>(a: (S, u64), b: (S, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl<S: Copy + Ord + Into<u128>> TopK<S> {
    /// Records that `id`'s score grew to `score`; says whether the list changed and
    /// which id (if any) it pushed out.
    pub fn offer(&mut self, k: usize, id: u64, score: S) -> Offer {
        let candidate = (score, id);
        if self.entries.len() >= k {
            match self.entries.last() {
                // The common case once the list is full: not good enough. (An id already
                // listed ranks at least as high as the last entry, and its score grew,
                // so it never takes this branch.)
                Some(&last) if !ranks_before(candidate, last) => return Offer::Unranked,
                None => return Offer::Unranked, // k == 0
                _ => {}
            }
        }
        let mut evicted = None;
        if let Some(pos) = self.entries.iter().position(|e| e.1 == id) {
            self.entries.remove(pos);
        } else if self.entries.len() >= k {
            evicted = self.entries.pop().map(|e| e.1);
        }
        let at = self
            .entries
            .partition_point(|&e| ranks_before(e, candidate));
        self.entries.insert(at, candidate);
        Offer::Ranked { evicted }
    }

    /// Takes `id` off the list (its score went down: the caller offers it again).
    pub fn remove(&mut self, id: u64) {
        self.entries.retain(|e| e.1 != id);
    }

    /// `id`'s score if it is listed.
    pub fn score_of(&self, id: u64) -> Option<S> {
        self.entries.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    pub fn entries(&self) -> &[(S, u64)] {
        &self.entries
    }

    /// The top `limit` of several lists over disjoint or identical ids (for identical
    /// ids, as across the shards of one creator book, scores must be the same).
    pub fn merge<'a>(lists: impl IntoIterator<Item = &'a TopK<S>>, limit: usize) -> Vec<(u128, u64)>
    where
        S: 'a,
    {
        merge_entries(lists.into_iter().map(|l| &l.entries[..]), limit)
    }
}

/// The top `limit` of several lists of `(score, id)` entries in any order, over disjoint
/// or identical ids (an id in several lists must have the same score in each).
pub(crate) fn merge_entries<'a, S: Copy + Into<u128> + 'a>(
    lists: impl IntoIterator<Item = &'a [(S, u64)]>,
    limit: usize,
) -> Vec<(u128, u64)> {
    let mut all: Vec<(u128, u64)> = lists
        .into_iter()
        .flat_map(|l| l.iter().map(|&(s, id)| (s.into(), id)))
        .collect();
    all.sort_unstable_by(rank_order);
    all.dedup_by_key(|e| e.1);
    all.truncate(limit);
    all
}

/// A sender shard's top-K gifters of one creator or stream: the same set as a
/// [`TopK<u64>`] given the same offers, but **unordered while it fills**, so that the
/// commonest offer under uniform load — the first gift of a new pair to a list not yet
/// full — is a push instead of a search and a shift of the list. A list sorts itself
/// once, when it reaches K entries, and from then on is kept best first as `TopK` keeps
/// it (the hot-creator case: a full list in cache).
///
/// Whether the gifter is listed is known from its score before the offer, without a
/// search: the list is exactly the top K of all current scores, so a gifter with a
/// score is listed iff the list is not full (nobody was ever pushed out) or its previous
/// score ranks at or above the last entry — and in a full, sorted list its place is
/// found by binary search.
///
/// Encoded as the `TopK<u64>` it replaced, best first (snapshots keep their format), and
/// compared as a set.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "TopK<u64>", into = "TopK<u64>")]
pub(crate) struct GifterTop {
    /// Unordered while fewer than K; best first from K on.
    entries: Vec<(u64, u64)>,
}

impl GifterTop {
    /// Records that `id`'s score grew from `previous` (0: never offered) to `score`.
    pub(crate) fn offer(&mut self, k: usize, id: u64, score: u64, previous: u64) {
        if k == 0 {
            return;
        }
        let candidate = (score, id);
        if self.entries.len() < k {
            // A gifter with a score is listed (unless `top_k` grew since it was pushed
            // out: then it enters as new).
            let listed = if previous == 0 {
                None
            } else {
                self.entries.iter().position(|e| e.1 == id)
            };
            match listed {
                Some(at) => self.entries[at].0 = score,
                None => {
                    self.entries.push(candidate);
                    if self.entries.len() == k {
                        self.entries.sort_unstable_by(rank_order);
                    }
                }
            }
            return;
        }
        let last = *self.entries.last().expect("k > 0 entries");
        let listed = (previous > 0 && !ranks_before(last, (previous, id)))
            .then(|| {
                let at = self
                    .entries
                    .partition_point(|&e| ranks_before(e, (previous, id)));
                // (Always found there while the list is exact; a search otherwise.)
                (self.entries.get(at) == Some(&(previous, id)))
                    .then_some(at)
                    .or_else(|| self.entries.iter().position(|e| e.1 == id))
            })
            .flatten();
        let from = if let Some(at) = listed {
            at
        } else if ranks_before(candidate, last) {
            self.entries.len() - 1 // the last one leaves
        } else {
            return;
        };
        let to = self.entries[..from].partition_point(|&e| ranks_before(e, candidate));
        self.entries[to..=from].rotate_right(1);
        self.entries[to] = candidate;
    }

    /// Where `id` is listed.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.1 == id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets entry `at`'s score (a list not full: order does not matter), or removes it
    /// at 0.
    pub(crate) fn set_or_remove(&mut self, at: usize, score: u64) {
        if score == 0 {
            self.entries.swap_remove(at);
        } else {
            self.entries[at].0 = score;
        }
    }

    /// The list rebuilt as the top `k` of `scores` (every gifter's, each once), best
    /// first.
    pub(crate) fn rebuild(&mut self, k: usize, mut scores: Vec<(u64, u64)>) {
        scores.sort_unstable_by(rank_order);
        scores.truncate(k);
        scores.shrink_to_fit();
        self.entries = scores;
    }

    /// The entries: best first once the list is full, in no particular order before.
    pub(crate) fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The entries best first.
    pub(crate) fn ranked(&self) -> Vec<(u64, u64)> {
        let mut ranked = self.entries.clone();
        ranked.sort_unstable_by(rank_order);
        ranked
    }
}

/// Best first: higher score, then lower id.
fn rank_order<S: Ord>(a: &(S, u64), b: &(S, u64)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

impl PartialEq for GifterTop {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len() && self.ranked() == other.ranked()
    }
}

impl Eq for GifterTop {}

impl From<TopK<u64>> for GifterTop {
    /// A decoded list: best first, which is valid at any length.
    fn from(top: TopK<u64>) -> Self {
        let mut entries = top.entries;
        entries.sort_unstable_by(rank_order);
        GifterTop { entries }
    }
}

impl From<GifterTop> for TopK<u64> {
    fn from(list: GifterTop) -> Self {
        TopK {
            entries: list.ranked(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_u128_list_that_fits_64_bits_reads_as_u64_and_encodes_the_same() {
        use crate::protocol::{decode_serde, encode_serde};
        let (mut wide, mut narrow) = (TopK::<u128>::default(), TopK::<u64>::default());
        for (id, score) in [(1, 0u64), (2, 250), (3, 251), (4, 70_000), (5, u64::MAX)] {
            wide.offer(10, id, u128::from(score));
            narrow.offer(10, id, score);
        }
        let bytes = encode_serde(&wide).unwrap();
        assert_eq!(bytes, encode_serde(&narrow).unwrap());
        assert_eq!(decode_serde::<TopK<u64>>(&bytes).unwrap(), narrow);
        assert_eq!(TopK::merge([&narrow], 10), wide.entries());
        wide.offer(10, 6, u128::from(u64::MAX) + 1);
        assert!(decode_serde::<TopK<u64>>(&encode_serde(&wide).unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn topk_equals_the_top_of_all_scores(
            k in 0usize..6,
            increments in proptest::collection::vec((0u64..20, 1u128..50), 0..200),
        ) {
            let mut scores = std::collections::BTreeMap::<u64, u128>::new();
            let mut top = TopK::default();
            // A mirror kept only from what the offers report (as the read model keeps
            // its Redis sorted sets) stays equal to the list.
            let mut mirror = std::collections::BTreeMap::<u64, u128>::new();
            for (id, inc) in increments {
                let s = scores.entry(id).or_default();
                *s += inc;
                if let Offer::Ranked { evicted } = top.offer(k, id, *s) {
                    mirror.insert(id, *s);
                    if let Some(out) = evicted {
                        prop_assert!(mirror.remove(&out).is_some());
                    }
                }
            }
            let listed: std::collections::BTreeMap<u64, u128> =
                top.entries().iter().map(|&(s, id)| (id, s)).collect();
            prop_assert_eq!(&mirror, &listed);
            let mut expected: Vec<(u128, u64)> = scores.iter().map(|(&id, &s)| (s, id)).collect();
            expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            expected.truncate(k);
            prop_assert_eq!(top.entries(), &expected[..]);
        }

        /// The shards' unordered lists hold exactly what a `TopK<u64>` holds after the
        /// same offers, at every step, and encode exactly as it does.
        #[test]
        fn gifter_top_holds_what_topk_holds_and_encodes_the_same(
            k in 0usize..6,
            increments in proptest::collection::vec((0u64..20, 1u64..50), 0..200),
        ) {
            use crate::protocol::{decode_serde, encode_serde};
            let mut scores = std::collections::BTreeMap::<u64, u64>::new();
            let mut sorted = TopK::<u64>::default();
            let mut unordered = GifterTop::default();
            let half = increments.len() / 2;
            for (i, (id, inc)) in increments.into_iter().enumerate() {
                if i == half {
                    // As after a restart from a snapshot: the list decoded from its bytes.
                    unordered = decode_serde(&encode_serde(&unordered).unwrap()).unwrap();
                }
                let s = scores.entry(id).or_default();
                let previous = *s;
                *s += inc;
                sorted.offer(k, id, *s);
                unordered.offer(k, id, *s, previous);
                prop_assert_eq!(&unordered.ranked()[..], sorted.entries());
                let mut ids: Vec<u64> = unordered.entries().iter().map(|e| e.1).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), unordered.entries().len(), "an id listed once");
            }
            let bytes = encode_serde(&unordered).unwrap();
            prop_assert_eq!(&bytes, &encode_serde(&sorted).unwrap());
            let back: GifterTop = decode_serde(&bytes).unwrap();
            prop_assert_eq!(&back, &unordered);
            prop_assert_eq!(
                merge_entries([unordered.entries()], 3),
                TopK::merge([&sorted], 3)
            );
        }
    }
}
