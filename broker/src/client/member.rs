//! Group membership over the wire: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and
//! OffsetCommit as the remote consumer and [`RemoteMember`] use them.
//!
//! Contract: [`RemoteMember`] keeps `runnel_log::membership`'s contract (a join returns this
//! member's assignment of a new generation, the leader's `assign` ran inside it; the
//! heartbeat raises the rejoin flag when the group rebalances or dropped the member). The
//! pieces ([`join_once`], [`sync_once`], [`heartbeat`], [`commit_once`], [`leave`]) are each
//! one request and its answer, shared with the consumer, so that both speak the protocol the
//! same way.

use super::cluster::{Cluster, RETRY_FOR};
use super::conn::Connection;
use super::{Bootstrap, str_bytes};
use crate::codes;
use crate::error::BrokerError;
use async_trait::async_trait;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use parking_lot::Mutex;
use runnel_log::error::GroupErrorKind;
use runnel_log::membership::{Assign, GroupMember, GroupMetadata, Joined};
use runnel_log::{ConsumerConfig, LogError, TopicPartition};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MEMBER_ID_REQUIRED: i16 = 79;

/// This member's place in its group, shared with its heartbeat task.
#[derive(Default)]
pub(super) struct Membership {
    pub member_id: String,
    pub generation: i32,
    pub joined: bool,
    /// Set by the heartbeat task when the group rebalances or dropped this member.
    pub rejoin: bool,
}

/// A group error as `LogError::Group` when it has a kind there; other codes stay Kafka errors
/// (so that NOT_COORDINATOR and the like are seen as retriable).
pub(super) fn group_error(group: &str, code: i16, api: &'static str) -> BrokerError {
    let kind = match code {
        codes::UNKNOWN_MEMBER_ID => GroupErrorKind::UnknownMember,
        codes::ILLEGAL_GENERATION => GroupErrorKind::IllegalGeneration,
        codes::REBALANCE_IN_PROGRESS => GroupErrorKind::RebalanceInProgress,
        codes::INCONSISTENT_GROUP_PROTOCOL => GroupErrorKind::InconsistentProtocol,
        _ => return super::conn::kafka_error(api, code, group),
    };
    BrokerError::Log(LogError::Group {
        group: group.to_string(),
        kind,
    })
}

/// One JoinGroup: `None` when the coordinator asks to join again (a member id handed out, a
/// forgotten one dropped, a rebalance under way), else its answer, with the member id and
/// generation stored in `member`.
pub(super) async fn join_once(
    conn: &Connection,
    group: &str,
    member: &Mutex<Membership>,
    config: &ConsumerConfig,
    protocols: &[(String, Vec<u8>)],
) -> Result<Option<JoinGroupResponse>, BrokerError> {
    let v = conn.version(ApiKey::JoinGroup, (2, 7))?;
    let member_id = member.lock().member_id.clone();
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_session_timeout_ms(config.session_timeout.as_millis() as i32)
        .with_rebalance_timeout_ms(config.rebalance_timeout.as_millis() as i32)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, meta)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(str_bytes(name.clone()))
                        .with_metadata(meta.clone().into())
                })
                .collect(),
        );
    let resp = conn.send(req, v).await?;
    match resp.error_code {
        0 => {}
        MEMBER_ID_REQUIRED => {
            member.lock().member_id = resp.member_id.to_string();
            return Ok(None);
        }
        codes::UNKNOWN_MEMBER_ID => {
            member.lock().member_id.clear();
            return Ok(None);
        }
        codes::REBALANCE_IN_PROGRESS => return Ok(None),
        code => return Err(group_error(group, code, "JoinGroup")),
    }
    let mut m = member.lock();
    m.member_id = resp.member_id.to_string();
    m.generation = resp.generation_id;
    Ok(Some(resp))
}

/// Every member's `(id, metadata)` of a join's answer (the leader's only).
pub(super) fn members_of(resp: &JoinGroupResponse) -> Vec<(String, Vec<u8>)> {
    resp.members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.to_vec()))
        .collect()
}

/// One SyncGroup after `joined` (with the leader's `assignments`): this member's assignment,
/// or `None` when the group moved on and the member must join again.
pub(super) async fn sync_once(
    conn: &Connection,
    group: &str,
    member: &Mutex<Membership>,
    joined: &JoinGroupResponse,
    assignments: Vec<(String, Vec<u8>)>,
) -> Result<Option<Vec<u8>>, BrokerError> {
    let v = conn.version(ApiKey::SyncGroup, (1, 5))?;
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(
            assignments
                .into_iter()
                .map(|(id, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(id))
                        .with_assignment(bytes.into())
                })
                .collect(),
        );
    let req = if v >= 5 {
        req.with_protocol_type(joined.protocol_type.clone())
            .with_protocol_name(joined.protocol_name.clone())
    } else {
        req
    };
    let sync = conn.send(req, v).await?;
    match sync.error_code {
        0 => Ok(Some(sync.assignment.to_vec())),
        codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => Ok(None),
        codes::UNKNOWN_MEMBER_ID => {
            member.lock().member_id.clear();
            Ok(None)
        }
        code => Err(group_error(group, code, "SyncGroup")),
    }
}

/// Heartbeats until the group tells this member to rejoin or the connection breaks; then
/// raises `member.rejoin` and `flag` (when given).
pub(super) async fn heartbeat(
    conn: Arc<Connection>,
    group: String,
    member: Arc<Mutex<Membership>>,
    every: Duration,
    flag: Option<Arc<AtomicBool>>,
) {
    let rejoin = |forget: bool| {
        let mut m = member.lock();
        m.rejoin = true;
        if forget {
            m.member_id.clear();
        }
        if let Some(f) = &flag {
            f.store(true, Ordering::Release);
        }
    };
    let Ok(v) = conn.version(ApiKey::Heartbeat, (0, 4)) else {
        rejoin(false);
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let (id, generation) = {
            let m = member.lock();
            (m.member_id.clone(), m.generation)
        };
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&group)))
            .with_generation_id(generation)
            .with_member_id(str_bytes(id));
        let code = match conn.send(req, v).await {
            Ok(r) => r.error_code,
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                codes::REBALANCE_IN_PROGRESS
            }
        };
        if code != 0 {
            rejoin(code == codes::UNKNOWN_MEMBER_ID);
            return;
        }
    }
}

/// One OffsetCommit of `offsets` for `group` (as its member, when it names one).
pub(super) async fn commit_once(
    coordinator: &Cluster,
    group: &GroupMetadata,
    offsets: &[(TopicPartition, u64)],
) -> Result<(), BrokerError> {
    let name = group.group_id.as_str();
    let conn = coordinator.coordinator(name).await?;
    let v = conn.version(ApiKey::OffsetCommit, (2, 8))?;
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition as i32)
                .with_committed_offset(*offset as i64),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(name)))
        .with_generation_id_or_member_epoch(group.generation)
        .with_member_id(str_bytes(group.member_id.clone()))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = conn.send(req, v).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(group_error(name, p.error_code, "OffsetCommit"));
            }
        }
    }
    Ok(())
}

/// Commits with retries of what Kafka calls retriable (a coordinator that moved, a lost
/// connection), for [`RETRY_FOR`].
pub(super) async fn commit(
    coordinator: &Cluster,
    group: &GroupMetadata,
    offsets: &[(TopicPartition, u64)],
) -> Result<(), BrokerError> {
    if offsets.is_empty() {
        return Ok(());
    }
    coordinator
        .retry("OffsetCommit", RETRY_FOR, || {
            commit_once(coordinator, group, offsets)
        })
        .await
}

/// One LeaveGroup for `member_id`.
pub(super) async fn leave(
    conn: &Connection,
    group: &str,
    member_id: &str,
) -> Result<(), BrokerError> {
    let v = conn.version(ApiKey::LeaveGroup, (0, 4))?;
    let req = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(group)));
    let req = if v >= 3 {
        req.with_members(vec![
            MemberIdentity::default().with_member_id(str_bytes(member_id)),
        ])
    } else {
        req.with_member_id(str_bytes(member_id))
    };
    conn.send(req, v).await?;
    Ok(())
}

/// A member of a group on a broker; see the module documentation.
pub struct RemoteMember {
    config: ConsumerConfig,
    group: String,
    coordinator: Cluster,
    member: Arc<Mutex<Membership>>,
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl RemoteMember {
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `group_id`.
    pub fn new(bootstrap: &Bootstrap, config: ConsumerConfig) -> Result<Self, LogError> {
        let group = config
            .group_id
            .clone()
            .ok_or_else(|| LogError::InvalidConfig("a group member needs a group_id".into()))?;
        Ok(Self {
            coordinator: Cluster::new(bootstrap),
            config,
            group,
            member: Arc::default(),
            rejoin: Arc::default(),
            heartbeat: None,
        })
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    async fn join_group(
        &mut self,
        protocols: &[(String, Vec<u8>)],
        assign: &mut Assign<'_>,
    ) -> Result<Joined, BrokerError> {
        self.stop_heartbeat();
        let conn = self.coordinator.coordinator(&self.group).await?;
        let (joined, assignment) = loop {
            let Some(joined) =
                join_once(&conn, &self.group, &self.member, &self.config, protocols).await?
            else {
                continue;
            };
            let assignments = if joined.leader == joined.member_id {
                let protocol = joined.protocol_name.as_ref().map_or("", |p| p.as_str());
                assign(protocol, &members_of(&joined)).map_err(BrokerError::Log)?
            } else {
                Vec::new()
            };
            if let Some(bytes) =
                sync_once(&conn, &self.group, &self.member, &joined, assignments).await?
            {
                break (joined, bytes);
            }
        };
        {
            let mut m = self.member.lock();
            m.joined = true;
            m.rejoin = false;
        }
        self.rejoin.store(false, Ordering::Release);
        self.heartbeat = Some(tokio::spawn(heartbeat(
            conn,
            self.group.clone(),
            self.member.clone(),
            self.config.heartbeat_interval,
            Some(self.rejoin.clone()),
        )));
        Ok(Joined {
            leader: joined.leader == joined.member_id,
            metadata: GroupMetadata {
                group_id: self.group.clone(),
                member_id: joined.member_id.to_string(),
                generation: joined.generation_id,
            },
            assignment,
        })
    }
}

#[async_trait]
impl GroupMember for RemoteMember {
    async fn join(
        &mut self,
        protocol: &str,
        metadata: Vec<u8>,
        assign: &mut Assign<'_>,
    ) -> runnel_log::Result<Joined> {
        let protocols = [(protocol.to_string(), metadata)];
        Ok(self.join_group(&protocols, assign).await?)
    }

    fn rejoin_flag(&self) -> Arc<AtomicBool> {
        self.rejoin.clone()
    }

    async fn leave(mut self: Box<Self>) -> runnel_log::Result<()> {
        self.stop_heartbeat();
        let member_id = std::mem::take(&mut self.member.lock().member_id);
        if !member_id.is_empty() {
            let conn = self.coordinator.coordinator(&self.group).await?;
            leave(&conn, &self.group, &member_id).await?;
        }
        Ok(())
    }
}

impl Drop for RemoteMember {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}
