//! Group membership without partitions (Kafka's `AbstractCoordinator`): a member joins a
//! group with metadata of its own making, the leader turns every member's metadata into
//! assignments, and a heartbeat in the background says when the group rebalances. The
//! engine's instances share a job's tasks through it; the in-process consumer joins through
//! the same [`join_and_sync`].
//!
//! Contract:
//! - [`GroupMember::join`] returns once this member holds its assignment of a new
//!   generation; on the leader, `assign` runs inside it with every member's metadata.
//! - After a join, the flag of [`GroupMember::rejoin_flag`] turns true when the group starts
//!   a rebalance or dropped this member (its session expired). The caller then stops using
//!   its assignment, commits what it may with the old [`GroupMetadata`] (allowed while the
//!   group prepares the rebalance), and joins again. Commits with the metadata of an older
//!   generation are refused: that is how a zombie member is fenced.
//! - Dropping a member leaves the group, as [`GroupMember::leave`] does.

use crate::consumer::{ConsumerConfig, blocking};
use crate::error::{GroupErrorKind, LogError, Result};
use crate::group::{JoinRequest, JoinResponse};
use crate::log::Log;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Who commits offsets (Kafka's `ConsumerGroupMetadata`): a member of a generation, or no
/// member at all (`member_id` empty, generation -1) for a committer outside group management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
}

impl GroupMetadata {
    /// A committer outside group management; the group refuses it while it has members.
    pub fn unmanaged(group_id: &str) -> Self {
        Self {
            group_id: group_id.into(),
            member_id: String::new(),
            generation: -1,
        }
    }

    /// `(member id, generation)` for a managed member, `None` otherwise.
    pub fn member(&self) -> Option<(&str, i32)> {
        (!self.member_id.is_empty()).then_some((self.member_id.as_str(), self.generation))
    }
}

/// What a join gave this member.
#[derive(Debug, Clone)]
pub struct Joined {
    pub metadata: GroupMetadata,
    /// Whether this member computed the assignments of this generation.
    pub leader: bool,
    /// This member's assignment, as the leader's `assign` encoded it.
    pub assignment: Vec<u8>,
}

/// The leader's part of a join: the protocol the coordinator chose and every member's
/// `(member id, metadata)` into each member's `(member id, assignment)`.
pub type Assign<'a> =
    dyn FnMut(&str, &[(String, Vec<u8>)]) -> Result<Vec<(String, Vec<u8>)>> + Send + 'a;

/// See the module documentation.
#[async_trait]
pub trait GroupMember: Send {
    /// Joins (or rejoins) the group with `metadata` under the assignor name `protocol`
    /// (protocol type `consumer`, so that Kafka's tools describe the group).
    ///
    /// # Errors
    ///
    /// [`LogError::Group`] with `InconsistentProtocol` when the group's members speak another
    /// protocol; what the leader's `assign` returns; the log's or the network's errors.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the member may be in the group without knowing its
    /// assignment; join again (the group then rebalances once more).
    async fn join(
        &mut self,
        protocol: &str,
        metadata: Vec<u8>,
        assign: &mut Assign<'_>,
    ) -> Result<Joined>;
    /// Set (by the heartbeat) when the group rebalances or dropped this member; cleared by
    /// the next [`join`](Self::join).
    fn rejoin_flag(&self) -> Arc<AtomicBool>;
    /// Leaves the group at once, so that the others rebalance without waiting for this
    /// member's session to expire.
    async fn leave(self: Box<Self>) -> Result<()>;
}

/// One JoinGroup and SyncGroup round trip, repeated until the group settles: the leader runs
/// `assign`. A member id the coordinator forgot (session expired) is dropped and the member
/// joins as new. Returns the join's answer (member id and generation) and this member's
/// assignment.
pub(crate) async fn join_and_sync(
    log: &Log,
    mut req: JoinRequest,
    assign: &mut Assign<'_>,
) -> Result<(JoinResponse, Vec<u8>)> {
    loop {
        let joined = match log.groups().join_group(req.clone()).await {
            Err(LogError::Group {
                kind: GroupErrorKind::UnknownMember,
                ..
            }) => {
                req.member_id.clear();
                continue;
            }
            r => r?,
        };
        req.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id {
            assign(&joined.protocol, &joined.members)?
        } else {
            Vec::new()
        };
        match (log.groups())
            .sync_group(&req.group, &req.member_id, joined.generation, assignments)
            .await
        {
            Ok(bytes) => return Ok((joined, bytes)),
            Err(LogError::Group { kind, .. }) => {
                tracing::debug!(%kind, group = %req.group, "sync refused; rejoining");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Heartbeats `member` of `generation` every `every`, until the group asks it to rejoin:
/// then raises `rejoin` and wakes `waker`.
pub(crate) async fn heartbeat_loop(
    log: Log,
    group: String,
    member: String,
    generation: i32,
    every: Duration,
    rejoin: Arc<AtomicBool>,
    waker: Arc<Notify>,
) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = log.groups().heartbeat(&group, &member, generation) {
            tracing::debug!(group = %group, member = %member, error = %e, "heartbeat asks to rejoin");
            rejoin.store(true, Ordering::Release);
            waker.notify_one();
            return;
        }
    }
}

/// A member of a group of the embedded log.
pub struct EmbeddedMember {
    log: Log,
    config: ConsumerConfig,
    group: String,
    member_id: String,
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedMember {
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `group_id`.
    pub fn new(log: Log, config: ConsumerConfig) -> Result<Self> {
        let group = config
            .group_id
            .clone()
            .ok_or_else(|| LogError::InvalidConfig("a group member needs a group_id".into()))?;
        Ok(Self {
            log,
            config,
            group,
            member_id: String::new(),
            rejoin: Arc::default(),
            heartbeat: None,
        })
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

#[async_trait]
impl GroupMember for EmbeddedMember {
    async fn join(
        &mut self,
        protocol: &str,
        metadata: Vec<u8>,
        assign: &mut Assign<'_>,
    ) -> Result<Joined> {
        self.stop_heartbeat();
        let req = JoinRequest {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            client_id: self.config.client_id.clone(),
            protocol_type: "consumer".into(),
            protocols: vec![(protocol.to_string(), metadata)],
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.rebalance_timeout,
        };
        let (joined, assignment) = join_and_sync(&self.log, req, assign).await?;
        self.member_id = joined.member_id.clone();
        self.rejoin.store(false, Ordering::Release);
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(
            self.log.clone(),
            self.group.clone(),
            joined.member_id.clone(),
            joined.generation,
            self.config.heartbeat_interval,
            self.rejoin.clone(),
            Arc::default(),
        )));
        Ok(Joined {
            leader: joined.leader == joined.member_id,
            metadata: GroupMetadata {
                group_id: self.group.clone(),
                member_id: joined.member_id,
                generation: joined.generation,
            },
            assignment,
        })
    }

    fn rejoin_flag(&self) -> Arc<AtomicBool> {
        self.rejoin.clone()
    }

    async fn leave(mut self: Box<Self>) -> Result<()> {
        self.stop_heartbeat();
        let (log, group, member) = (
            self.log.clone(),
            self.group.clone(),
            std::mem::take(&mut self.member_id),
        );
        if !member.is_empty() {
            blocking(move || {
                log.groups().leave_group(&group, &member);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for EmbeddedMember {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if !self.member_id.is_empty() {
            self.log.groups().leave_group(&self.group, &self.member_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(log: &Log) -> Box<dyn GroupMember> {
        Box::new(
            EmbeddedMember::new(
                log.clone(),
                ConsumerConfig {
                    group_id: Some("g".into()),
                    heartbeat_interval: Duration::from_millis(20),
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    }

    /// Each member gets the assignment the leader made from its metadata; a second member
    /// makes the first one's flag rise, and after both rejoin the leader saw both.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_leader_assigns_from_every_members_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let echo = |_: &str, members: &[(String, Vec<u8>)]| -> Result<Vec<(String, Vec<u8>)>> {
            let all: Vec<u8> = members.iter().flat_map(|(_, m)| m.clone()).collect();
            Ok(members
                .iter()
                .map(|(id, _)| (id.clone(), all.clone()))
                .collect())
        };
        let mut a = member(&log);
        let first = a.join("p", b"a".to_vec(), &mut echo.clone()).await.unwrap();
        assert!(first.leader);
        assert_eq!(first.assignment, b"a");
        let flag = a.rejoin_flag();
        let mut b = member(&log);
        let second = tokio::spawn(async move {
            let j = b.join("p", b"b".to_vec(), &mut echo.clone()).await.unwrap();
            (b, j)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "no rebalance signalled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = a.join("p", b"a".to_vec(), &mut echo.clone()).await.unwrap();
        let (b, joined_b) = second.await.unwrap();
        let mut both = again.assignment.clone();
        both.sort();
        assert_eq!(both, b"ab");
        assert_eq!(again.assignment, joined_b.assignment);
        assert_eq!(again.metadata.generation, joined_b.metadata.generation);
        assert!(again.metadata.generation > first.metadata.generation);
        // A commit from the first generation is refused: the fencing of zombies.
        let stale = log.groups().commit_offsets(
            "g",
            first.metadata.member(),
            &[(crate::TopicPartition::new("t", 0), 1, String::new())],
        );
        assert!(stale.is_err(), "{stale:?}");
        b.leave().await.unwrap();
        a.leave().await.unwrap();
    }
}
