//! Fetch sessions (KIP-227, Fetch v7+): the broker remembers a consumer's partitions between
//! fetches, so an incremental request names only what changed and the answer holds only the
//! partitions with news.
//!
//! Contract (Kafka's, by `session_id` and `session_epoch` of the request):
//! - id 0, epoch -1: a full fetch without a session (the answer's session id is 0).
//! - id 0, epoch 0: a full fetch that opens a session; its id comes back in the answer, and the
//!   next request carries epoch 1.
//! - id N, epoch -1: closes session N; the request is a full fetch without a session.
//! - id N, epoch 0: closes session N and opens a new one with this full request.
//! - id N, epoch E > 0: incremental. The request's partitions are added to the session or
//!   update their fetch offset and size, `forgotten_topics_data` leaves it; the answer holds
//!   only partitions that returned records, changed high watermark or log start, or failed.
//!   An unknown id gets FETCH_SESSION_ID_NOT_FOUND, an epoch other than the expected one
//!   INVALID_FETCH_SESSION_EPOCH (the client then starts over with a full fetch).
//! - At most [`MAX_SESSIONS`] sessions are kept; opening one beyond that evicts the least
//!   recently used (its client gets FETCH_SESSION_ID_NOT_FOUND next time and starts over).
//! - The epoch moves on when a request is accepted, before it is answered: a client whose
//!   answer was lost gets INVALID_FETCH_SESSION_EPOCH and starts over, as with Kafka.

use crate::codes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

pub(crate) const MAX_SESSIONS: usize = 1000;

/// One partition's place in a session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionPartition {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// What the last answer that held this partition said (-1: never answered).
    pub high_watermark: i64,
    pub log_start: i64,
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    partitions: BTreeMap<(String, i32), SessionPartition>,
    used: Instant,
}

/// What to fetch for one request, after the session rules.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The session id for the answer (0: none).
    pub session_id: i32,
    /// True when the answer must hold only partitions with news.
    pub incremental: bool,
    /// Every partition to read: (topic, partition) → offset and size.
    pub partitions: BTreeMap<(String, i32), SessionPartition>,
}

/// The broker's fetch sessions.
pub(crate) struct FetchSessions {
    sessions: Mutex<HashMap<i32, Session>>,
    next_id: Mutex<i32>,
}

impl Default for FetchSessions {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            // Random start, so a restarted broker does not accept a previous run's ids.
            next_id: Mutex::new(rand::random_range(1..i32::MAX / 2)),
        }
    }
}

/// A partition named in a request.
pub(crate) struct Requested {
    pub topic: String,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
}

impl FetchSessions {
    /// Applies the session rules to a request. `Err` is the top-level error code to answer.
    pub fn plan(
        &self,
        session_id: i32,
        epoch: i32,
        requested: Vec<Requested>,
        forgotten: Vec<(String, i32)>,
    ) -> Result<Plan, i16> {
        let full = |requested: Vec<Requested>| -> BTreeMap<(String, i32), SessionPartition> {
            requested
                .into_iter()
                .map(|r| {
                    (
                        (r.topic, r.partition),
                        SessionPartition {
                            fetch_offset: r.fetch_offset,
                            max_bytes: r.max_bytes,
                            high_watermark: -1,
                            log_start: -1,
                        },
                    )
                })
                .collect()
        };
        let mut sessions = self.sessions.lock();
        if epoch <= 0 && session_id != 0 {
            sessions.remove(&session_id);
        }
        match epoch {
            -1 => Ok(Plan {
                session_id: 0,
                incremental: false,
                partitions: full(requested),
            }),
            0 => {
                let partitions = full(requested);
                if sessions.len() >= MAX_SESSIONS
                    && let Some(oldest) = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.used)
                        .map(|(id, _)| *id)
                {
                    sessions.remove(&oldest);
                }
                let id = {
                    let mut next = self.next_id.lock();
                    let id = *next;
                    *next = if *next == i32::MAX { 1 } else { *next + 1 };
                    id
                };
                sessions.insert(
                    id,
                    Session {
                        next_epoch: 1,
                        partitions: partitions.clone(),
                        used: Instant::now(),
                    },
                );
                Ok(Plan {
                    session_id: id,
                    incremental: false,
                    partitions,
                })
            }
            e if e > 0 => {
                let Some(s) = sessions.get_mut(&session_id) else {
                    return Err(codes::FETCH_SESSION_ID_NOT_FOUND);
                };
                if s.next_epoch != e {
                    return Err(codes::INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.used = Instant::now();
                for key in forgotten {
                    s.partitions.remove(&key);
                }
                for r in requested {
                    let p =
                        s.partitions
                            .entry((r.topic, r.partition))
                            .or_insert(SessionPartition {
                                fetch_offset: 0,
                                max_bytes: 0,
                                high_watermark: -1,
                                log_start: -1,
                            });
                    p.fetch_offset = r.fetch_offset;
                    p.max_bytes = r.max_bytes;
                }
                Ok(Plan {
                    session_id,
                    incremental: true,
                    partitions: s.partitions.clone(),
                })
            }
            _ => Err(codes::INVALID_FETCH_SESSION_EPOCH),
        }
    }

    /// Records what an answer told the client about a partition; returns whether an
    /// incremental answer must include it (it has records, an error, or offsets that moved).
    pub fn answered(
        &self,
        session_id: i32,
        key: &(String, i32),
        high_watermark: i64,
        log_start: i64,
        has_records_or_error: bool,
    ) -> bool {
        let mut sessions = self.sessions.lock();
        let Some(p) = sessions
            .get_mut(&session_id)
            .and_then(|s| s.partitions.get_mut(key))
        else {
            return true;
        };
        let changed = p.high_watermark != high_watermark || p.log_start != log_start;
        p.high_watermark = high_watermark;
        p.log_start = log_start;
        has_records_or_error || changed
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(topic: &str, partition: i32, offset: i64) -> Requested {
        Requested {
            topic: topic.into(),
            partition,
            fetch_offset: offset,
            max_bytes: 1000,
        }
    }

    #[test]
    fn session_rules() {
        let s = FetchSessions::default();
        // Sessionless.
        let p = s.plan(0, -1, vec![req("a", 0, 5)], vec![]).unwrap();
        assert_eq!((p.session_id, p.incremental), (0, false));
        assert_eq!(s.len(), 0);
        // Open, then incremental: partitions persist, offsets update, forgotten ones leave.
        let p = s
            .plan(0, 0, vec![req("a", 0, 5), req("a", 1, 7)], vec![])
            .unwrap();
        let id = p.session_id;
        assert!(id != 0 && !p.incremental);
        let p = s.plan(id, 1, vec![req("a", 1, 9)], vec![]).unwrap();
        assert!(p.incremental);
        assert_eq!(p.partitions.len(), 2);
        assert_eq!(p.partitions[&("a".into(), 1)].fetch_offset, 9);
        assert_eq!(p.partitions[&("a".into(), 0)].fetch_offset, 5);
        let p = s
            .plan(id, 2, vec![req("b", 0, 0)], vec![("a".into(), 0)])
            .unwrap();
        let keys: Vec<_> = p.partitions.keys().cloned().collect();
        assert_eq!(keys, vec![("a".into(), 1), ("b".into(), 0)]);
        // A replayed or skipped epoch, an unknown id.
        assert_eq!(
            s.plan(id, 2, vec![], vec![]).unwrap_err(),
            codes::INVALID_FETCH_SESSION_EPOCH
        );
        assert_eq!(
            s.plan(id + 1, 1, vec![], vec![]).unwrap_err(),
            codes::FETCH_SESSION_ID_NOT_FOUND
        );
        // Only partitions with news go in an incremental answer.
        let key = ("a".to_string(), 1);
        assert!(s.answered(id, &key, 10, 0, false));
        assert!(!s.answered(id, &key, 10, 0, false));
        assert!(s.answered(id, &key, 10, 0, true));
        assert!(s.answered(id, &key, 11, 0, false));
        // Epoch -1 closes it.
        s.plan(id, -1, vec![], vec![]).unwrap();
        assert_eq!(s.len(), 0);
        assert_eq!(
            s.plan(id, 3, vec![], vec![]).unwrap_err(),
            codes::FETCH_SESSION_ID_NOT_FOUND
        );
    }
}
