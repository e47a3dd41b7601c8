//! The group APIs, served by the log's own [`runnel_log::GroupCoordinator`].
//!
//! Contract:
//! - The broker is the coordinator of every group (FindCoordinator answers node 0).
//! - JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch are passed to
//!   the coordinator unchanged (opaque protocol metadata, leader-computed assignment), so wire
//!   members and in-process `runnel_log::Consumer`s can be members of one group.
//! - JoinGroup and SyncGroup wait inside the coordinator; the connection answers nothing else
//!   meanwhile, as Kafka clients expect (they heartbeat on a separate connection or not at all
//!   during a join).
//! - A new member gets its id in the first JoinGroup response (Kafka's MEMBER_ID_REQUIRED
//!   round trip of v4+ is not used; clients accept both).
//! - Static membership (`group.instance.id`) is not supported: such members are treated as
//!   dynamic ones.
//! - OffsetDelete drops a group's committed offsets (tombstones in `__consumer_offsets`) only
//!   while the group has no live member: partitions of a group with members are answered
//!   GROUP_SUBSCRIBED_TO_TOPIC (Kafka checks the members' subscriptions; Runnel's coordinator
//!   does not decode them, so any member counts); an unknown group gets GROUP_ID_NOT_FOUND.

use super::{blocking, str_bytes};
use crate::codes;
use crate::server::{Broker, ListenerInfo};
use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use runnel_log::TopicPartition;
use runnel_log::group::JoinRequest;
use std::time::Duration;

const PROTOCOL_TYPE: &str = "consumer";

pub(crate) fn find_coordinator(
    listener: &ListenerInfo,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let host = str_bytes(listener.advertised_host.clone());
    let port = listener.advertised_port;
    let resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.with_coordinators(
            r.coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(0))
                        .with_host(host.clone())
                        .with_port(port)
                })
                .collect(),
        )
    } else {
        resp.with_node_id(BrokerId(0))
            .with_host(host)
            .with_port(port)
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

pub(crate) async fn join(b: &Broker, r: JoinGroupRequest, client_id: &str) -> JoinGroupResponse {
    let req = JoinRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        client_id: client_id.to_string(),
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        session_timeout: millis(r.session_timeout_ms),
        // v0 has no rebalance timeout; Kafka uses the session timeout then.
        rebalance_timeout: millis(if r.rebalance_timeout_ms > 0 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        }),
    };
    match b.log.groups().join_group(req).await {
        Ok(j) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type(Some(r.protocol_type))
            .with_protocol_name(Some(str_bytes(j.protocol)))
            .with_leader(str_bytes(j.leader))
            .with_member_id(str_bytes(j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(id))
                            .with_metadata(Bytes::from(meta))
                    })
                    .collect(),
            ),
        Err(e) => JoinGroupResponse::default()
            .with_error_code(codes::for_log_error(&e))
            .with_generation_id(-1)
            .with_member_id(r.member_id),
    }
}

pub(crate) async fn sync(b: &Broker, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let result = b
        .log
        .groups()
        .sync_group(&r.group_id.0, &r.member_id, r.generation_id, assignments)
        .await;
    match result {
        Ok(a) => SyncGroupResponse::default()
            .with_protocol_type(r.protocol_type)
            .with_protocol_name(r.protocol_name)
            .with_assignment(Bytes::from(a)),
        Err(e) => SyncGroupResponse::default().with_error_code(codes::for_log_error(&e)),
    }
}

pub(crate) fn heartbeat(b: &Broker, r: HeartbeatRequest) -> HeartbeatResponse {
    let code = match b
        .log
        .groups()
        .heartbeat(&r.group_id.0, &r.member_id, r.generation_id)
    {
        Ok(()) => codes::NONE,
        Err(e) => codes::for_log_error(&e),
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub(crate) fn leave(b: &Broker, r: LeaveGroupRequest) -> LeaveGroupResponse {
    // v0-2 name one member; v3+ a list.
    let mut ids: Vec<kafka_protocol::protocol::StrBytes> =
        r.members.iter().map(|m| m.member_id.clone()).collect();
    if !r.member_id.is_empty() {
        ids.push(r.member_id.clone());
    }
    for id in &ids {
        b.log.groups().leave_group(&r.group_id.0, id);
    }
    LeaveGroupResponse::default().with_members(
        r.members
            .into_iter()
            .map(|m| MemberResponse::default().with_member_id(m.member_id))
            .collect(),
    )
}

pub(crate) async fn offset_commit(b: &Broker, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let mut offsets = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            if let (Ok(id), Ok(offset)) = (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                let meta = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
                offsets.push((
                    TopicPartition::new(t.name.0.as_str(), id),
                    offset,
                    meta.to_string(),
                ));
            }
        }
    }
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    let generation = r.generation_id_or_member_epoch;
    let log = b.log.clone();
    let code = match blocking(move || {
        // A standalone consumer commits with generation -1 and no member id.
        let m = (generation >= 0 || !member.is_empty()).then_some((member.as_str(), generation));
        log.groups().commit_offsets(&group, m, &offsets)
    })
    .await
    {
        Ok(Ok(())) => codes::NONE,
        Ok(Err(e)) => codes::for_log_error(&e),
        Err(_) => codes::UNKNOWN_SERVER_ERROR,
    };
    OffsetCommitResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let invalid = p.partition_index < 0 || p.committed_offset < 0;
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if invalid {
                                        codes::INVALID_REQUEST
                                    } else {
                                        code
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(crate) fn offset_fetch(b: &Broker, r: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = r.group_id.0.as_str();
    let coordinator = b.log.groups();
    // A null topic list (v2+) asks for every committed offset of the group.
    let wanted: Vec<(TopicName, Vec<i32>)> = match r.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for tp in coordinator.describe_group(group).offsets.keys() {
                by_topic
                    .entry(tp.topic.clone())
                    .or_default()
                    .push(tp.partition as i32);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| (TopicName(str_bytes(t)), ps))
                .collect()
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|p| {
                    let committed = u32::try_from(p).ok().and_then(|id| {
                        coordinator.committed(group, &TopicPartition::new(name.0.as_str(), id))
                    });
                    let resp = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_leader_epoch(-1);
                    match committed {
                        Some(c) => resp
                            .with_committed_offset(c.offset as i64)
                            .with_metadata(Some(str_bytes(c.metadata))),
                        None => resp
                            .with_committed_offset(-1)
                            .with_metadata(Some(str_bytes(""))),
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(crate) fn describe_groups(b: &Broker, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = r
        .groups
        .into_iter()
        .map(|g| {
            let d = b.log.groups().describe_group(&g.0);
            let has_protocol = d.protocol.is_some();
            DescribedGroup::default()
                .with_group_id(g)
                .with_group_state(str_bytes(if d.members.is_empty() && d.offsets.is_empty() {
                    "Dead".to_string()
                } else {
                    d.state.to_string()
                }))
                .with_protocol_type(str_bytes(if has_protocol { PROTOCOL_TYPE } else { "" }))
                .with_protocol_data(str_bytes(d.protocol.unwrap_or_default()))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|(id, client, assignment)| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(id))
                                .with_client_id(str_bytes(client))
                                .with_member_assignment(Bytes::from(assignment))
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(crate) fn list_groups(b: &Broker, r: ListGroupsRequest) -> ListGroupsResponse {
    let groups = b
        .log
        .groups()
        .list_groups()
        .into_iter()
        .filter(|(_, state)| {
            r.states_filter.is_empty()
                || r.states_filter
                    .iter()
                    .any(|s| s.as_str() == state.to_string())
        })
        .map(|(name, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(name)))
                .with_protocol_type(str_bytes(PROTOCOL_TYPE))
                .with_group_state(str_bytes(state.to_string()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn offset_delete(b: &Broker, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let group = r.group_id.0.to_string();
    let described = b.log.groups().describe_group(&group);
    if described.members.is_empty() && described.offsets.is_empty() {
        return OffsetDeleteResponse::default().with_error_code(codes::GROUP_ID_NOT_FOUND);
    }
    let busy = !described.members.is_empty();
    let wanted: Vec<TopicPartition> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.name.0.as_str(), p.partition_index.max(0) as u32))
        })
        .collect();
    let log = b.log.clone();
    let code = if busy {
        codes::GROUP_SUBSCRIBED_TO_TOPIC
    } else {
        match blocking(move || log.groups().delete_offsets(&group, &wanted)).await {
            Ok(Ok(())) => codes::NONE,
            Ok(Err(e)) => codes::for_log_error(&e),
            Err(_) => codes::UNKNOWN_SERVER_ERROR,
        }
    };
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
