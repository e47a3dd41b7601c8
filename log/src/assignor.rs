//! Consumer-group partition assignment and Kafka's consumer protocol encoding.
//!
//! Contract: [`assign`] divides the partitions of the topics a group subscribes
//! to among its members the way Kafka's client-side assignors do, and
//! [`MemberSubscription::encode`]/[`encode_assignment`] speak Kafka's
//! `ConsumerProtocolSubscription`/`ConsumerProtocolAssignment` wire format, so
//! in-process members and real Kafka clients can share a group.
//!
//! Invariants of [`assign`], for every strategy:
//! - the result has an entry for every member id, possibly empty, and each
//!   entry is sorted and free of duplicates;
//! - every partition of a topic that exists in `partitions_per_topic` and has
//!   at least one subscriber is assigned to exactly one member subscribed to
//!   it; nothing else is assigned;
//! - members are ordered by `member_id`, never by their position in the input,
//!   so the result depends only on the set of members. Member ids are expected
//!   to be unique; when one repeats, its first subscription is used.
//!
//! Per strategy:
//! - [`AssignmentStrategy::Range`] is Kafka's `RangeAssignor`: per topic, the
//!   subscribers sorted by id get contiguous ranges, the first
//!   `partitions % subscribers` of them one partition more.
//! - [`AssignmentStrategy::RoundRobin`] is Kafka's `RoundRobinAssignor`: all
//!   partitions in (topic, partition) order are dealt over the members sorted
//!   by id, skipping members not subscribed to the partition's topic.
//! - [`AssignmentStrategy::Sticky`] ends balanced in the strong sense Kafka's
//!   `AbstractStickyAssignor` checks: no partition held by a member could go to
//!   another subscriber of its topic holding at least two fewer. Hence any two
//!   members with the same subscriptions differ by at most one partition. Within
//!   that, members keep their valid `owned_partitions` (with identical
//!   subscriptions, as many as balance allows); a partition claimed by several
//!   members stays with the claimant with the smallest id; unowned partitions
//!   (e.g. of departed members) go to the least loaded subscriber.
//!
//! Wire format (big-endian, Kafka's non-flexible encoding):
//! - subscriptions are written as version 1: topics, user data, owned
//!   partitions. Decoding accepts version 0 (no owned partitions), 1, and any
//!   higher version by reading the version 1 fields and ignoring what follows,
//!   as Kafka does;
//! - assignments are written as version 1: assigned partitions, user data.
//!   Decoding accepts any version >= 0 the same way, and an empty byte slice
//!   is the empty assignment Kafka's coordinator sends members with nothing;
//! - empty user data is written as null (length -1), Kafka's default, and both
//!   null and empty decode to empty;
//! - partition lists are written grouped by topic in sorted order, and decoded
//!   partition lists are returned sorted;
//! - malformed input yields [`LogError::Protocol`] naming the field and byte
//!   offset; decoding never panics, and a forged count never makes it reserve
//!   room for more elements than the input has bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::{LogError, TopicPartition};

/// Version written for subscriptions: the first with owned partitions.
const SUBSCRIPTION_VERSION: i16 = 1;
/// Version written for assignments; versions 0 to 3 share one layout.
const ASSIGNMENT_VERSION: i16 = 1;
/// Kafka's length prefix for a null `bytes` field.
const NULL_LENGTH: i32 = -1;

/// A partition assignment strategy, named as in Kafka's group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssignmentStrategy {
    Range,
    RoundRobin,
    Sticky,
}

impl AssignmentStrategy {
    /// Every strategy, in the order members usually advertise them.
    pub const ALL: [Self; 3] = [Self::Range, Self::RoundRobin, Self::Sticky];

    /// The protocol name Kafka clients advertise for this strategy.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
            Self::Sticky => "sticky",
        }
    }
}

impl FromStr for AssignmentStrategy {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|strategy| strategy.name() == name)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(Self::name).collect();
                format!(
                    "unknown assignment strategy {name:?}; valid names are: {}",
                    valid.join(", ")
                )
            })
    }
}

/// What one member of a group asked for when it joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub topics: Vec<String>,
    /// The partitions the member held before this rebalance; only the sticky
    /// strategy looks at them.
    pub owned_partitions: Vec<TopicPartition>,
    pub user_data: Vec<u8>,
}

/// Assigns the partitions of the subscribed topics among `members`.
///
/// Returns every member id with its sorted partitions; see the module docs for
/// the guarantees of each strategy.
pub fn assign(
    strategy: AssignmentStrategy,
    members: &[MemberSubscription],
    partitions_per_topic: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let group = Group::new(members, partitions_per_topic);
    // Each strategy hands out partitions in (topic, partition) order, so the
    // shares come out sorted.
    let shares = match strategy {
        AssignmentStrategy::Range => assign_range(&group),
        AssignmentStrategy::RoundRobin => assign_round_robin(&group),
        AssignmentStrategy::Sticky => assign_sticky(&group),
    };
    group.label(shares)
}

/// The group as the strategies see it: members sorted by id with repeated ids
/// dropped, and only topics that exist and have subscribers.
struct Group<'a> {
    members: Vec<Member<'a>>,
    topics: Vec<Topic<'a>>,
}

struct Member<'a> {
    id: &'a str,
    /// Narrowed to topics present in `partitions_per_topic`.
    topics: BTreeSet<&'a str>,
    owned: &'a [TopicPartition],
}

struct Topic<'a> {
    name: &'a str,
    partitions: u32,
    /// Indices into `Group::members`, in member id order.
    subscribers: Vec<usize>,
}

impl<'a> Group<'a> {
    fn new(
        subscriptions: &'a [MemberSubscription],
        partitions_per_topic: &'a BTreeMap<String, u32>,
    ) -> Self {
        let mut by_id: BTreeMap<&str, &MemberSubscription> = BTreeMap::new();
        for subscription in subscriptions {
            by_id
                .entry(subscription.member_id.as_str())
                .or_insert(subscription);
        }
        let members: Vec<Member<'a>> = by_id
            .into_values()
            .map(|subscription| Member {
                id: &subscription.member_id,
                topics: subscription
                    .topics
                    .iter()
                    .map(String::as_str)
                    .filter(|topic| partitions_per_topic.contains_key(*topic))
                    .collect(),
                owned: &subscription.owned_partitions,
            })
            .collect();
        let topics = partitions_per_topic
            .iter()
            .map(|(name, &partitions)| Topic {
                name,
                partitions,
                subscribers: subscribers_of(&members, name),
            })
            .filter(|topic| !topic.subscribers.is_empty())
            .collect();
        Self { members, topics }
    }

    /// Pairs per-member shares, indexed like `members`, with the member ids.
    fn label(&self, shares: Vec<Vec<TopicPartition>>) -> BTreeMap<String, Vec<TopicPartition>> {
        self.members
            .iter()
            .map(|member| member.id.to_owned())
            .zip(shares)
            .collect()
    }

    fn empty_shares<T: Default + Clone>(&self) -> Vec<T> {
        vec![T::default(); self.members.len()]
    }

    /// Where `partition` sits among the subscribed topics, if it still exists.
    fn slot_of(&self, partition: &TopicPartition) -> Option<Slot> {
        let index = self
            .topics
            .binary_search_by(|topic| topic.name.cmp(partition.topic.as_str()))
            .ok()?;
        (partition.partition < self.topics[index].partitions)
            .then_some((index, partition.partition))
    }
}

fn subscribers_of(members: &[Member<'_>], topic: &str) -> Vec<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(_, member)| member.topics.contains(topic))
        .map(|(index, _)| index)
        .collect()
}

impl Topic<'_> {
    fn partition(&self, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: self.name.to_owned(),
            partition,
        }
    }

    fn all_partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        (0..self.partitions).map(|partition| self.partition(partition))
    }
}

fn assign_range(group: &Group<'_>) -> Vec<Vec<TopicPartition>> {
    let mut shares: Vec<Vec<TopicPartition>> = group.empty_shares();
    for topic in &group.topics {
        let subscribers = topic.subscribers.len();
        for (rank, &member) in topic.subscribers.iter().enumerate() {
            let (start, len) = range_slice(rank, subscribers, topic.partitions);
            shares[member].extend((start..start + len).map(|p| topic.partition(p)));
        }
    }
    shares
}

/// The `(start, len)` of the range the `rank`-th of `subscribers` members gets
/// out of `partitions`, exactly as Kafka's `RangeAssignor` computes it.
fn range_slice(rank: usize, subscribers: usize, partitions: u32) -> (u32, u32) {
    // u64 keeps `base * rank` from overflowing; the results are bounded by
    // `partitions`, so narrowing them back to u32 is lossless.
    let (rank, subscribers, partitions) = (rank as u64, subscribers as u64, u64::from(partitions));
    let base = partitions / subscribers;
    let with_extra = partitions % subscribers;
    let start = base * rank + rank.min(with_extra);
    let len = base + u64::from(rank < with_extra);
    (start as u32, len as u32)
}

fn assign_round_robin(group: &Group<'_>) -> Vec<Vec<TopicPartition>> {
    let mut shares: Vec<Vec<TopicPartition>> = group.empty_shares();
    let members = group.members.len();
    let mut cursor = 0;
    for topic in &group.topics {
        for partition in topic.all_partitions() {
            // Kafka's CircularIterator skips members not subscribed to the
            // topic without dealing them a card; topics only list partitions
            // that have a subscriber, so the search always succeeds.
            let Some(member) = (0..members)
                .map(|step| (cursor + step) % members)
                .find(|&index| group.members[index].topics.contains(topic.name))
            else {
                continue;
            };
            shares[member].push(partition);
            cursor = (member + 1) % members;
        }
    }
    shares
}

fn assign_sticky(group: &Group<'_>) -> Vec<Vec<TopicPartition>> {
    let mut sticky = Sticky::new(group);
    sticky.keep_owned(group);
    sticky.place_unowned(group);
    sticky.rebalance();
    sticky.into_shares(group)
}

/// A partition as the sticky strategy tracks it: an index into
/// `Group::topics`, which is in topic order, and the partition number.
type Slot = (usize, u32);

/// Working state of the sticky strategy. Loads are indexed both for the whole
/// group and per topic, so finding and making a move costs logarithmic time
/// rather than a scan of every partition.
struct Sticky {
    /// Per member and topic index, the held partitions as `(kept, partition)`:
    /// partitions the member kept from before sort last, so the first entry
    /// is the cheapest to give away.
    held: Vec<BTreeMap<usize, BTreeSet<(bool, u32)>>>,
    loads: Vec<usize>,
    /// `(load, member)` of every member, lightest first.
    by_load: BTreeSet<(usize, usize)>,
    /// `(load, member)` of each topic's subscribers, lightest first.
    by_load_per_topic: Vec<BTreeSet<(usize, usize)>>,
    /// The topic indices each member subscribes to, ascending.
    topics_of: Vec<Vec<usize>>,
    /// Which member kept each partition from its previous assignment; moving
    /// a partition away from that member costs stickiness.
    kept_by: BTreeMap<Slot, usize>,
}

impl Sticky {
    fn new(group: &Group<'_>) -> Self {
        let members = group.members.len();
        let mut topics_of = vec![Vec::new(); members];
        for (index, topic) in group.topics.iter().enumerate() {
            for &member in &topic.subscribers {
                topics_of[member].push(index);
            }
        }
        Self {
            held: group.empty_shares(),
            loads: vec![0; members],
            by_load: (0..members).map(|member| (0, member)).collect(),
            by_load_per_topic: group
                .topics
                .iter()
                .map(|topic| topic.subscribers.iter().map(|&m| (0, m)).collect())
                .collect(),
            topics_of,
            kept_by: BTreeMap::new(),
        }
    }

    /// Keeps each member's still-valid owned partitions, resolving double
    /// claims in favour of the smallest member id.
    fn keep_owned(&mut self, group: &Group<'_>) {
        for (member, subscription) in group.members.iter().enumerate() {
            for owned in subscription.owned {
                let Some(slot) = group.slot_of(owned) else {
                    continue;
                };
                let subscribed = self.topics_of[member].binary_search(&slot.0).is_ok();
                if subscribed && !self.kept_by.contains_key(&slot) {
                    self.kept_by.insert(slot, member);
                    self.add(member, slot);
                }
            }
        }
    }

    /// Hands every partition nobody kept to the least loaded subscriber,
    /// placing the partitions with the fewest candidates first so they are
    /// not squeezed out by partitions that could have gone anywhere.
    fn place_unowned(&mut self, group: &Group<'_>) {
        let mut unowned: Vec<(usize, Slot)> = group
            .topics
            .iter()
            .enumerate()
            .flat_map(|(index, topic)| {
                let candidates = topic.subscribers.len();
                (0..topic.partitions).map(move |partition| (candidates, (index, partition)))
            })
            .filter(|(_, slot)| !self.kept_by.contains_key(slot))
            .collect();
        unowned.sort_unstable();
        for (_, slot) in unowned {
            if let Some(&(_, member)) = self.by_load_per_topic[slot.0].first() {
                self.add(member, slot);
            }
        }
    }

    /// Moves single partitions from the most loaded members to subscribers
    /// holding at least two fewer until no such move exists. Each move lowers
    /// the sum of squared loads, so the loop ends.
    fn rebalance(&mut self) {
        while let Some((from, to, slot)) = self.next_move() {
            self.remove(from, slot);
            self.add(to, slot);
        }
    }

    fn next_move(&self) -> Option<(usize, usize, Slot)> {
        let &(lightest, _) = self.by_load.first()?;
        // Heaviest donors first; none lighter than `lightest + 2` can give.
        self.by_load
            .iter()
            .rev()
            .take_while(|&&(load, _)| load >= lightest + 2)
            .find_map(|&(load, from)| self.best_move_from(from, load))
    }

    /// The cheapest useful move out of `from`: partitions `from` did not keep
    /// from before go first, as moving them loses no stickiness, then those
    /// going to the lightest receiver.
    fn best_move_from(&self, from: usize, load: usize) -> Option<(usize, usize, Slot)> {
        self.held[from]
            .iter()
            .filter_map(|(&topic, partitions)| {
                let &(kept, partition) = partitions.first()?;
                let &(to_load, to) = self.by_load_per_topic[topic].first()?;
                (to_load + 2 <= load).then_some((kept, to_load, to, (topic, partition)))
            })
            .min()
            .map(|(_, _, to, slot)| (from, to, slot))
    }

    fn is_kept(&self, member: usize, slot: Slot) -> bool {
        self.kept_by.get(&slot) == Some(&member)
    }

    fn add(&mut self, member: usize, slot: Slot) {
        let entry = (self.is_kept(member, slot), slot.1);
        self.held[member].entry(slot.0).or_default().insert(entry);
        self.set_load(member, self.loads[member] + 1);
    }

    /// Takes `slot` from `member`, which must hold it.
    fn remove(&mut self, member: usize, slot: Slot) {
        let entry = (self.is_kept(member, slot), slot.1);
        if let Some(partitions) = self.held[member].get_mut(&slot.0) {
            partitions.remove(&entry);
        }
        self.set_load(member, self.loads[member] - 1);
    }

    fn set_load(&mut self, member: usize, load: usize) {
        let (old, new) = ((self.loads[member], member), (load, member));
        self.by_load.remove(&old);
        self.by_load.insert(new);
        for &topic in &self.topics_of[member] {
            self.by_load_per_topic[topic].remove(&old);
            self.by_load_per_topic[topic].insert(new);
        }
        self.loads[member] = load;
    }

    fn into_shares(self, group: &Group<'_>) -> Vec<Vec<TopicPartition>> {
        self.held
            .into_iter()
            .map(|topics| {
                topics
                    .into_iter()
                    .flat_map(|(index, partitions)| {
                        let mut ids: Vec<u32> = partitions.into_iter().map(|(_, p)| p).collect();
                        ids.sort_unstable();
                        ids.into_iter()
                            .map(move |p| group.topics[index].partition(p))
                    })
                    .collect()
            })
            .collect()
    }
}

impl MemberSubscription {
    /// Encodes this subscription as `ConsumerProtocolSubscription` version 1.
    /// The member id is not part of it: the group coordinator carries it.
    ///
    /// # Panics
    ///
    /// If a value cannot be expressed in Kafka's protocol, which Kafka's own
    /// serializer refuses as well: a topic name over 32767 bytes, a partition
    /// id above `i32::MAX`, or more than `i32::MAX` topics or user data bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_i16(&mut out, SUBSCRIPTION_VERSION);
        put_count(&mut out, self.topics.len(), "subscribed topics");
        for topic in &self.topics {
            put_string(&mut out, topic);
        }
        put_nullable_bytes(&mut out, &self.user_data);
        put_topic_partitions(&mut out, &self.owned_partitions);
        out
    }

    /// Decodes a `ConsumerProtocolSubscription` of any version for the member
    /// the coordinator knows as `member_id`.
    ///
    /// # Errors
    ///
    /// [`LogError::Protocol`], naming the field and byte offset, if `bytes`
    /// are truncated, carry a negative version, length or partition id, or
    /// hold a topic name that is not UTF-8.
    pub fn decode(member_id: &str, bytes: &[u8]) -> Result<Self, LogError> {
        let mut reader = Reader::new(bytes);
        let version = reader.version("subscription version")?;
        let topics = reader.array("subscribed topics", |r| r.string("subscribed topic"))?;
        let user_data = reader.nullable_bytes("subscription user data")?;
        let owned_partitions = if version >= 1 {
            reader.topic_partitions("owned partitions")?
        } else {
            Vec::new()
        };
        Ok(Self {
            member_id: member_id.to_owned(),
            topics,
            owned_partitions,
            user_data,
        })
    }
}

/// Encodes `partitions` as `ConsumerProtocolAssignment` version 1 with null
/// user data.
///
/// # Panics
///
/// If a topic name is over 32767 bytes or a partition id above `i32::MAX`,
/// which Kafka's protocol cannot express.
pub fn encode_assignment(partitions: &[TopicPartition]) -> Vec<u8> {
    encode_assignment_with(partitions, &[])
}

/// As [`encode_assignment`], with `user_data` (empty is written as null).
///
/// # Panics
///
/// As [`encode_assignment`]'s, and for user data over `i32::MAX` bytes.
pub fn encode_assignment_with(partitions: &[TopicPartition], user_data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_i16(&mut out, ASSIGNMENT_VERSION);
    put_topic_partitions(&mut out, partitions);
    put_nullable_bytes(&mut out, user_data);
    out
}

/// Decodes a `ConsumerProtocolAssignment` of any version into its sorted
/// partitions; user data is validated and dropped.
///
/// # Errors
///
/// [`LogError::Protocol`], naming the field and byte offset, if `bytes` are
/// truncated, carry a negative version, length or partition id, or hold a
/// topic name that is not UTF-8.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, LogError> {
    Ok(decode_assignment_with(bytes)?.0)
}

/// As [`decode_assignment`], with the user data (empty for null).
///
/// # Errors
///
/// As [`decode_assignment`]'s.
pub fn decode_assignment_with(bytes: &[u8]) -> Result<(Vec<TopicPartition>, Vec<u8>), LogError> {
    if bytes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut reader = Reader::new(bytes);
    reader.version("assignment version")?;
    let partitions = reader.topic_partitions("assigned partitions")?;
    let user_data = reader.nullable_bytes("assignment user data")?;
    Ok((partitions, user_data))
}

fn put_i16(out: &mut Vec<u8>, value: i16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Converts a Rust size or id to its wire integer, refusing what does not fit.
fn wire_int<T: TryFrom<U>, U: Copy + std::fmt::Display>(value: U, what: &str) -> T {
    match T::try_from(value) {
        Ok(wire) => wire,
        Err(_) => panic!("{what} ({value}) does not fit Kafka's consumer protocol"),
    }
}

fn put_count(out: &mut Vec<u8>, count: usize, what: &str) {
    put_i32(out, wire_int(count, what));
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    put_i16(out, wire_int(value.len(), "topic name length"));
    out.extend_from_slice(value.as_bytes());
}

fn put_nullable_bytes(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        put_i32(out, NULL_LENGTH);
    } else {
        put_count(out, value.len(), "user data length");
        out.extend_from_slice(value);
    }
}

/// Writes Kafka's `[]TopicPartition`: one entry per topic with its ids.
fn put_topic_partitions(out: &mut Vec<u8>, partitions: &[TopicPartition]) {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for partition in partitions {
        by_topic
            .entry(&partition.topic)
            .or_default()
            .push(partition.partition);
    }
    put_count(out, by_topic.len(), "topic count");
    for (topic, mut ids) in by_topic {
        ids.sort_unstable();
        put_string(out, topic);
        put_count(out, ids.len(), "partition count");
        for id in ids {
            put_i32(out, wire_int(id, "partition id"));
        }
    }
}

/// A bounds-checked cursor over untrusted consumer protocol bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.offset..).unwrap_or_default()
    }

    fn truncated(&self, needed: usize, what: &str) -> LogError {
        let problem = format!(
            "truncated, needs {needed} bytes but {} remain",
            self.remaining().len()
        );
        protocol_error(self.offset, what, problem)
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], LogError> {
        let taken = self
            .remaining()
            .get(..len)
            .ok_or_else(|| self.truncated(len, what))?;
        self.offset += len;
        Ok(taken)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LogError> {
        let taken = self
            .remaining()
            .first_chunk::<N>()
            .copied()
            .ok_or_else(|| self.truncated(N, what))?;
        self.offset += N;
        Ok(taken)
    }

    fn i16(&mut self, what: &str) -> Result<i16, LogError> {
        self.fixed(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, LogError> {
        self.fixed(what).map(i32::from_be_bytes)
    }

    fn version(&mut self, what: &str) -> Result<i16, LogError> {
        let at = self.offset;
        let version = self.i16(what)?;
        if version < 0 {
            return Err(protocol_error(
                at,
                what,
                format!("unsupported version {version}"),
            ));
        }
        Ok(version)
    }

    fn string(&mut self, what: &str) -> Result<String, LogError> {
        let at = self.offset;
        let raw_len = self.i16(what)?;
        let len = non_negative(raw_len.into(), at, what)?;
        let start = self.offset;
        let raw = self.take(len, what)?;
        let text = std::str::from_utf8(raw)
            .map_err(|err| protocol_error(start + err.valid_up_to(), what, "invalid UTF-8"))?;
        Ok(text.to_owned())
    }

    fn nullable_bytes(&mut self, what: &str) -> Result<Vec<u8>, LogError> {
        let at = self.offset;
        let raw_len = self.i32(what)?;
        if raw_len == NULL_LENGTH {
            return Ok(Vec::new());
        }
        let len = non_negative(raw_len.into(), at, what)?;
        Ok(self.take(len, what)?.to_vec())
    }

    fn array<T>(
        &mut self,
        what: &str,
        mut element: impl FnMut(&mut Self) -> Result<T, LogError>,
    ) -> Result<Vec<T>, LogError> {
        let at = self.offset;
        let raw_count = self.i32(what)?;
        let count = non_negative(raw_count.into(), at, what)?;
        // Every element takes at least one byte, so a forged count cannot
        // make us reserve more than the input could hold.
        let mut items = Vec::with_capacity(count.min(self.remaining().len()));
        for _ in 0..count {
            items.push(element(self)?);
        }
        Ok(items)
    }

    fn partition_id(&mut self, what: &str) -> Result<u32, LogError> {
        let at = self.offset;
        let raw = self.i32(what)?;
        u32::try_from(raw)
            .map_err(|_| protocol_error(at, what, format!("negative partition id {raw}")))
    }

    /// Reads Kafka's `[]TopicPartition` and flattens it, sorted.
    fn topic_partitions(&mut self, what: &str) -> Result<Vec<TopicPartition>, LogError> {
        let topic_what = format!("{what} topic");
        let id_what = format!("{what} partition id");
        let entries = self.array(what, |r| {
            let topic = r.string(&topic_what)?;
            let ids = r.array(&id_what, |r| r.partition_id(&id_what))?;
            Ok((topic, ids))
        })?;
        let mut partitions: Vec<TopicPartition> = entries
            .into_iter()
            .flat_map(|(topic, ids)| {
                ids.into_iter().map(move |partition| TopicPartition {
                    topic: topic.clone(),
                    partition,
                })
            })
            .collect();
        partitions.sort();
        Ok(partitions)
    }
}

fn protocol_error(at: usize, what: &str, problem: impl std::fmt::Display) -> LogError {
    LogError::Protocol(format!(
        "malformed consumer protocol {what} at byte {at}: {problem}"
    ))
}

/// Checks a length or count prefix, which Kafka never writes negative except
/// as the null marker callers handle first.
fn non_negative(raw: i64, at: usize, what: &str) -> Result<usize, LogError> {
    usize::try_from(raw).map_err(|_| protocol_error(at, what, format!("negative length {raw}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    fn tps(topic: &str, partitions: &[u32]) -> Vec<TopicPartition> {
        partitions.iter().map(|&p| tp(topic, p)).collect()
    }

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            ..MemberSubscription::default()
        }
    }

    fn owning(id: &str, topics: &[&str], owned: Vec<TopicPartition>) -> MemberSubscription {
        MemberSubscription {
            owned_partitions: owned,
            ..member(id, topics)
        }
    }

    fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn loads(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> Vec<usize> {
        assignment.values().map(Vec::len).collect()
    }

    fn is_subset(part: &[TopicPartition], whole: &[TopicPartition]) -> bool {
        part.iter().all(|p| whole.contains(p))
    }

    fn protocol_message(result: Result<impl std::fmt::Debug, LogError>) -> String {
        match result {
            Err(LogError::Protocol(message)) => message,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn strategy_names_round_trip_and_reject_unknown() {
        for strategy in AssignmentStrategy::ALL {
            assert_eq!(strategy.name().parse(), Ok(strategy));
        }
        assert_eq!(AssignmentStrategy::RoundRobin.name(), "roundrobin");
        let err = "cooperative-sticky"
            .parse::<AssignmentStrategy>()
            .unwrap_err();
        assert!(err.contains("range, roundrobin, sticky"), "{err}");
    }

    #[test]
    fn range_splits_evenly_into_contiguous_ranges() {
        let members = [
            member("c", &["t"]),
            member("a", &["t"]),
            member("b", &["t"]),
        ];
        let got = assign(AssignmentStrategy::Range, &members, &topics(&[("t", 6)]));
        assert_eq!(got["a"], tps("t", &[0, 1]));
        assert_eq!(got["b"], tps("t", &[2, 3]));
        assert_eq!(got["c"], tps("t", &[4, 5]));
    }

    #[test]
    fn range_gives_the_first_members_the_remainder() {
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let got = assign(AssignmentStrategy::Range, &members, &topics(&[("t", 7)]));
        assert_eq!(got["a"], tps("t", &[0, 1, 2]));
        assert_eq!(got["b"], tps("t", &[3, 4]));
        assert_eq!(got["c"], tps("t", &[5, 6]));
    }

    #[test]
    fn range_works_per_topic_like_kafka() {
        // Kafka's documented example: the remainder of every topic lands on
        // the same first member.
        let members = [member("c0", &["t0", "t1"]), member("c1", &["t0", "t1"])];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &topics(&[("t0", 3), ("t1", 3)]),
        );
        let mut c0 = tps("t0", &[0, 1]);
        c0.extend(tps("t1", &[0, 1]));
        assert_eq!(got["c0"], c0);
        let mut c1 = tps("t0", &[2]);
        c1.extend(tps("t1", &[2]));
        assert_eq!(got["c1"], c1);
    }

    #[test]
    fn every_member_is_listed_and_unknown_topics_are_ignored() {
        let members = [
            member("a", &["t", "ghost"]),
            member("b", &["t"]),
            member("c", &["t"]),
            member("idle", &[]),
        ];
        for strategy in AssignmentStrategy::ALL {
            let got = assign(strategy, &members, &topics(&[("t", 2), ("other", 4)]));
            let ids: Vec<&str> = got.keys().map(String::as_str).collect();
            assert_eq!(ids, ["a", "b", "c", "idle"], "{strategy:?}");
            assert_eq!(got["idle"], [], "{strategy:?}");
            assert_eq!(loads(&got).iter().sum::<usize>(), 2, "{strategy:?}");
        }
    }

    #[test]
    fn round_robin_deals_sorted_partitions_over_sorted_members() {
        // Kafka's documented example for identical subscriptions.
        let members = [member("c1", &["t0", "t1"]), member("c0", &["t0", "t1"])];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &topics(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(got["c0"], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
        assert_eq!(got["c1"], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
    }

    #[test]
    fn round_robin_skips_members_not_subscribed() {
        // Kafka's documented example for differing subscriptions.
        let members = [
            member("c0", &["t0"]),
            member("c1", &["t0", "t1"]),
            member("c2", &["t0", "t1", "t2"]),
        ];
        let counts = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let got = assign(AssignmentStrategy::RoundRobin, &members, &counts);
        assert_eq!(got["c0"], [tp("t0", 0)]);
        assert_eq!(got["c1"], [tp("t1", 0)]);
        assert_eq!(
            got["c2"],
            [tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]
        );
    }

    #[test]
    fn sticky_balances_differing_subscriptions_like_kafka() {
        // Kafka's documented example where sticky beats round robin.
        let members = [
            member("c0", &["t0"]),
            member("c1", &["t0", "t1"]),
            member("c2", &["t0", "t1", "t2"]),
        ];
        let counts = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let got = assign(AssignmentStrategy::Sticky, &members, &counts);
        assert_eq!(got["c0"], [tp("t0", 0)]);
        assert_eq!(got["c1"], tps("t1", &[0, 1]));
        assert_eq!(got["c2"], tps("t2", &[0, 1, 2]));
    }

    #[test]
    fn sticky_keeps_ownership_when_a_member_leaves() {
        let counts = topics(&[("t", 9)]);
        let before = assign(
            AssignmentStrategy::Sticky,
            &[
                member("a", &["t"]),
                member("b", &["t"]),
                member("c", &["t"]),
            ],
            &counts,
        );
        assert_eq!(loads(&before), [3, 3, 3]);
        let survivors = [
            owning("a", &["t"], before["a"].clone()),
            owning("b", &["t"], before["b"].clone()),
        ];
        let after = assign(AssignmentStrategy::Sticky, &survivors, &counts);
        assert!(is_subset(&before["a"], &after["a"]));
        assert!(is_subset(&before["b"], &after["b"]));
        let mut spread = loads(&after);
        spread.sort_unstable();
        assert_eq!(spread, [4, 5]);
    }

    #[test]
    fn sticky_keeps_ownership_when_a_member_joins() {
        let counts = topics(&[("t", 6)]);
        let members = [
            owning("a", &["t"], tps("t", &[0, 1, 2])),
            owning("b", &["t"], tps("t", &[3, 4, 5])),
            member("c", &["t"]),
        ];
        let got = assign(AssignmentStrategy::Sticky, &members, &counts);
        assert_eq!(loads(&got), [2, 2, 2]);
        assert!(is_subset(&got["a"], &tps("t", &[0, 1, 2])));
        assert!(is_subset(&got["b"], &tps("t", &[3, 4, 5])));
    }

    #[test]
    fn sticky_gives_a_doubly_claimed_partition_to_one_member() {
        let members = [
            owning("b", &["t"], tps("t", &[0, 1])),
            owning("a", &["t"], tps("t", &[0, 2])),
        ];
        let got = assign(AssignmentStrategy::Sticky, &members, &topics(&[("t", 4)]));
        assert_eq!(got["a"], tps("t", &[0, 2]));
        assert_eq!(got["b"], tps("t", &[1, 3]));
    }

    #[test]
    fn sticky_drops_claims_it_cannot_honour() {
        // Unsubscribed topic, vanished topic, and a partition past the end.
        let members = [
            owning(
                "a",
                &["t"],
                vec![tp("u", 0), tp("gone", 0), tp("t", 9), tp("t", 1)],
            ),
            member("b", &["t", "u"]),
        ];
        let got = assign(
            AssignmentStrategy::Sticky,
            &members,
            &topics(&[("t", 2), ("u", 1)]),
        );
        // a keeps only t-1; u-0 can only go to b, and the free t-0 then goes
        // to a, tied at one partition each, by id.
        assert_eq!(got["a"], tps("t", &[0, 1]));
        assert_eq!(got["b"], [tp("u", 0)]);
    }

    #[test]
    fn subscription_encoding_matches_kafka_layout() {
        let subscription = MemberSubscription {
            member_id: "m".to_owned(),
            topics: vec!["t".to_owned()],
            owned_partitions: vec![tp("t", 0)],
            user_data: Vec::new(),
        };
        let expected = [
            0, 1, // version 1
            0, 0, 0, 1, 0, 1, b't', // topics ["t"]
            0xff, 0xff, 0xff, 0xff, // null user data
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, // owned t-0
        ];
        assert_eq!(subscription.encode(), expected);
        assert_eq!(
            MemberSubscription::decode("m", &expected).unwrap(),
            subscription
        );
    }

    #[test]
    fn subscription_v0_has_no_owned_partitions() {
        let bytes = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, b'x', b'y'];
        let got = MemberSubscription::decode("m", &bytes).unwrap();
        assert_eq!(got.topics, ["t"]);
        assert_eq!(got.user_data, b"xy");
        assert_eq!(got.owned_partitions, []);
    }

    #[test]
    fn newer_subscription_versions_ignore_trailing_fields() {
        let mut bytes = MemberSubscription {
            topics: vec!["t".to_owned()],
            owned_partitions: vec![tp("t", 3)],
            ..MemberSubscription::default()
        }
        .encode();
        bytes[1] = 3;
        bytes.extend_from_slice(&7i32.to_be_bytes()); // v2 generation id
        bytes.extend_from_slice(&[0, 2, b'r', b'1']); // v3 rack id
        let got = MemberSubscription::decode("m", &bytes).unwrap();
        assert_eq!(got.owned_partitions, [tp("t", 3)]);
    }

    #[test]
    fn assignment_encoding_matches_kafka_layout() {
        let expected = [
            0, 1, // version 1
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, // t: [0, 5]
            0xff, 0xff, 0xff, 0xff, // null user data
        ];
        assert_eq!(encode_assignment(&[tp("t", 5), tp("t", 0)]), expected);
        assert_eq!(decode_assignment(&expected).unwrap(), tps("t", &[0, 5]));
    }

    #[test]
    fn empty_assignment_bytes_mean_no_partitions() {
        assert_eq!(decode_assignment(&[]).unwrap(), []);
    }

    #[test]
    fn decode_errors_name_the_field_and_offset() {
        let truncated = protocol_message(MemberSubscription::decode("m", &[0, 1, 0, 0]));
        assert!(
            truncated.contains("subscribed topics at byte 2"),
            "{truncated}"
        );
        assert!(truncated.contains("truncated"), "{truncated}");

        let negative = [0, 1, 0, 0, 0, 1, 0xff, 0xfe];
        let message = protocol_message(MemberSubscription::decode("m", &negative));
        assert!(message.contains("subscribed topic at byte 6"), "{message}");
        assert!(message.contains("negative length -2"), "{message}");

        let bad_utf8 = [0, 1, 0, 0, 0, 1, 0, 2, b'a', 0xc0];
        let message = protocol_message(MemberSubscription::decode("m", &bad_utf8));
        assert!(message.contains("invalid UTF-8"), "{message}");
        assert!(message.contains("at byte 9"), "{message}");

        let bad_version = protocol_message(decode_assignment(&[0xff, 0xff]));
        assert!(
            bad_version.contains("unsupported version -1"),
            "{bad_version}"
        );

        let negative_id = [
            0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
        ];
        let message = protocol_message(decode_assignment(&negative_id));
        assert!(message.contains("negative partition id -1"), "{message}");
        assert!(message.contains("at byte 13"), "{message}");
    }

    /// Random groups: a pool of topics (some missing from the partition map),
    /// members with random subscriptions and random, possibly invalid or
    /// conflicting, owned partitions.
    fn any_group() -> impl Strategy<Value = (Vec<MemberSubscription>, BTreeMap<String, u32>)> {
        const POOL: [&str; 5] = ["a", "b", "c", "d", "ghost"];
        let counts = prop::collection::vec(prop::option::of(0u32..8), 4);
        let member = (
            prop::collection::vec(any::<bool>(), POOL.len()),
            prop::collection::vec((0..POOL.len(), 0u32..9), 0..6),
        );
        (counts, prop::collection::vec(member, 0..7)).prop_map(|(counts, members)| {
            let partitions_per_topic = POOL
                .iter()
                .zip(counts)
                .filter_map(|(topic, count)| Some(((*topic).to_owned(), count?)))
                .collect();
            let members = members
                .into_iter()
                .enumerate()
                .map(|(i, (subscribed, owned))| MemberSubscription {
                    member_id: format!("m{i}"),
                    topics: POOL
                        .iter()
                        .zip(subscribed)
                        .filter(|(_, on)| *on)
                        .map(|(topic, _)| (*topic).to_owned())
                        .collect(),
                    owned_partitions: owned.into_iter().map(|(t, p)| tp(POOL[t], p)).collect(),
                    user_data: Vec::new(),
                })
                .collect();
            (members, partitions_per_topic)
        })
    }

    /// Groups where everyone subscribes to the same topics and owns a disjoint
    /// set of valid partitions, as after a clean previous generation.
    fn uniform_group() -> impl Strategy<Value = (Vec<MemberSubscription>, BTreeMap<String, u32>)> {
        (1usize..7, 0u32..12, 0u32..12).prop_flat_map(|(members, a, b)| {
            let owners = prop::collection::vec(prop::option::of(0..members + 2), (a + b) as usize);
            owners.prop_map(move |owners| {
                let partitions: Vec<TopicPartition> = tps("a", &(0..a).collect::<Vec<_>>())
                    .into_iter()
                    .chain(tps("b", &(0..b).collect::<Vec<_>>()))
                    .collect();
                let group = (0..members)
                    .map(|i| {
                        let owned = partitions
                            .iter()
                            .zip(&owners)
                            .filter(|(_, owner)| **owner == Some(i))
                            .map(|(p, _)| p.clone())
                            .collect();
                        owning(&format!("m{i}"), &["a", "b"], owned)
                    })
                    .collect();
                (group, topics(&[("a", a), ("b", b)]))
            })
        })
    }

    fn subscribes(member: &MemberSubscription, topic: &str) -> bool {
        member.topics.iter().any(|t| t == topic)
    }

    fn check_exactly_once(
        members: &[MemberSubscription],
        counts: &BTreeMap<String, u32>,
        got: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> Result<(), TestCaseError> {
        let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
        prop_assert!(got.keys().map(String::as_str).eq(ids.iter().copied()));
        let mut seen = BTreeSet::new();
        for m in members {
            let share = &got[&m.member_id];
            prop_assert!(share.is_sorted());
            for p in share {
                prop_assert!(
                    subscribes(m, &p.topic),
                    "{p:?} to unsubscribed {}",
                    m.member_id
                );
                prop_assert!(seen.insert(p.clone()), "{p:?} assigned twice");
            }
        }
        let expected: BTreeSet<TopicPartition> = counts
            .iter()
            .filter(|(topic, _)| members.iter().any(|m| subscribes(m, topic)))
            .flat_map(|(topic, &n)| (0..n).map(move |p| tp(topic, p)))
            .collect();
        prop_assert_eq!(seen, expected);
        Ok(())
    }

    fn spread(got: &BTreeMap<String, Vec<TopicPartition>>) -> usize {
        let loads = loads(got);
        loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0)
    }

    /// The most partitions members can keep under balance: the members owning
    /// most get the `total % members` larger quotas.
    fn best_possible_kept(members: &[MemberSubscription], total: usize) -> usize {
        let mut owned: Vec<usize> = members.iter().map(|m| m.owned_partitions.len()).collect();
        owned.sort_unstable_by(|a, b| b.cmp(a));
        let (base, extra) = (total / owned.len(), total % owned.len());
        owned
            .iter()
            .enumerate()
            .map(|(rank, &n)| n.min(base + usize::from(rank < extra)))
            .sum()
    }

    proptest! {
        #[test]
        fn every_subscribed_partition_goes_to_exactly_one_subscriber(
            (members, counts) in any_group()
        ) {
            for strategy in AssignmentStrategy::ALL {
                let got = assign(strategy, &members, &counts);
                check_exactly_once(&members, &counts, &got)?;
            }
        }

        #[test]
        fn sticky_is_balanced_and_deterministic((members, counts) in any_group()) {
            let got = assign(AssignmentStrategy::Sticky, &members, &counts);
            // Kafka's balance check: no partition could move to another
            // subscriber of its topic holding two fewer.
            for holder in &members {
                let load = got[&holder.member_id].len();
                for p in &got[&holder.member_id] {
                    for other in members.iter().filter(|m| subscribes(m, &p.topic)) {
                        prop_assert!(load <= got[&other.member_id].len() + 1);
                    }
                }
            }
            let reversed: Vec<_> = members.iter().rev().cloned().collect();
            prop_assert_eq!(assign(AssignmentStrategy::Sticky, &reversed, &counts), got);
        }

        #[test]
        fn uniform_subscriptions_balance_within_one((members, counts) in uniform_group()) {
            for strategy in [AssignmentStrategy::RoundRobin, AssignmentStrategy::Sticky] {
                let got = assign(strategy, &members, &counts);
                check_exactly_once(&members, &counts, &got)?;
                prop_assert!(spread(&got) <= 1, "{strategy:?}: {got:?}");
            }
        }

        #[test]
        fn sticky_keeps_as_much_as_balance_allows((members, counts) in uniform_group()) {
            let got = assign(AssignmentStrategy::Sticky, &members, &counts);
            let kept: usize = members
                .iter()
                .map(|m| got[&m.member_id].iter().filter(|p| m.owned_partitions.contains(p)).count())
                .sum();
            let total = counts.values().sum::<u32>() as usize;
            prop_assert_eq!(kept, best_possible_kept(&members, total));
        }

        #[test]
        fn subscription_round_trips(
            topics in prop::collection::vec(".{0,12}", 0..5),
            user_data in prop::collection::vec(any::<u8>(), 0..16),
            owned in prop::collection::vec(("[a-z]{0,4}", 0..=i32::MAX as u32), 0..8),
        ) {
            let mut owned_partitions: Vec<TopicPartition> =
                owned.into_iter().map(|(t, p)| tp(&t, p)).collect();
            owned_partitions.sort();
            let subscription = MemberSubscription {
                member_id: "member-1".to_owned(),
                topics,
                owned_partitions,
                user_data,
            };
            let bytes = subscription.encode();
            prop_assert_eq!(&MemberSubscription::decode("member-1", &bytes).unwrap(), &subscription);
            for len in 0..bytes.len() {
                prop_assert!(MemberSubscription::decode("member-1", &bytes[..len]).is_err());
            }
        }

        #[test]
        fn assignment_round_trips(
            assigned in prop::collection::vec((".{0,6}", 0..=i32::MAX as u32), 0..10),
        ) {
            let mut partitions: Vec<TopicPartition> =
                assigned.into_iter().map(|(t, p)| tp(&t, p)).collect();
            let bytes = encode_assignment(&partitions);
            partitions.sort();
            prop_assert_eq!(decode_assignment(&bytes).unwrap(), partitions);
            for len in 1..bytes.len() {
                prop_assert!(decode_assignment(&bytes[..len]).is_err());
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = MemberSubscription::decode("m", &bytes);
            let _ = decode_assignment(&bytes);
        }

        #[test]
        fn decoding_corrupted_encodings_never_panics(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // Flipping one byte of a valid message reaches the deep error
            // paths that random bytes rarely get past the version to.
            let subscription = owning("m", &["alpha", "beta"], vec![tp("alpha", 1), tp("beta", 2)]);
            for mut bytes in [subscription.encode(), encode_assignment(&subscription.owned_partitions)] {
                let at = index.index(bytes.len());
                bytes[at] = byte;
                let _ = MemberSubscription::decode("m", &bytes);
                let _ = decode_assignment(&bytes);
            }
        }
    }
}
