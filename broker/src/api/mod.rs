//! Request dispatch: header parsing, version negotiation, and one module per API family.
//!
//! Contract:
//! - [`SUPPORTED`] is what ApiVersions advertises and what is served. Upper bounds stop below
//!   versions that need state Runnel does not keep (topic ids in Produce v13 and Fetch v13+,
//!   KIP-848 groups), so clients negotiate name-based versions.
//! - ApiVersions at a version above ours is answered with UNSUPPORTED_VERSION and a v0 body
//!   listing our versions, as Kafka does, so the client can retry at a version we speak.
//! - Any other unknown API key or unsupported version is answered with a response header and
//!   the error code UNSUPPORTED_VERSION, keeping the connection open.
//! - A request whose header or body cannot be decoded is a [`BrokerError::Malformed`]: the
//!   connection is closed by the caller.

pub(crate) mod admin;
pub(crate) mod cluster_admin;
pub(crate) mod fetch;
pub(crate) mod fetch_session;
pub(crate) mod groups;
pub(crate) mod parts;
pub(crate) mod produce;
pub(crate) mod txn;

use crate::codes::{self, api_name};
use crate::error::BrokerError;
use crate::server::Broker;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use parts::{FileRecords, Part};
use std::time::Instant;

/// (API, min version, max version) served by the broker.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 0),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
];

pub(crate) enum Outcome {
    /// A size-prefixed response, in parts written one after the other.
    Respond(Vec<Part>),
    /// Produce with acks=0: Kafka sends nothing back.
    NoResponse,
}

fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Handles one request frame (without its size prefix) and returns the framed response.
pub(crate) async fn handle(broker: &Broker, mut frame: Bytes) -> Result<Outcome, BrokerError> {
    if frame.len() < 8 {
        return Err(BrokerError::Malformed(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        )));
    }
    let started = Instant::now();
    let (key, version) = (i16_at(&frame, 0), i16_at(&frame, 2));
    let correlation_id = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
    let Ok(api) = ApiKey::try_from(key) else {
        tracing::debug!(api_key = key, "unknown API key");
        broker
            .metrics
            .record("Unsupported", started.elapsed(), true);
        return Ok(Outcome::Respond(vec![Part::Bytes(error_only(
            correlation_id,
            0,
        ))]));
    };
    let name = api_name(api);
    if !supported(api, version) {
        tracing::debug!(api = ?api, version, "unsupported API version");
        broker.metrics.record(name, started.elapsed(), true);
        if api == ApiKey::ApiVersions {
            let body = ResponseKind::ApiVersions(
                api_versions().with_error_code(codes::UNSUPPORTED_VERSION),
            );
            return Ok(Outcome::Respond(encode(
                correlation_id,
                0,
                &body,
                0,
                FileRecords::default(),
            )?));
        }
        let valid = api.valid_versions();
        let header_version = if (valid.min..=valid.max).contains(&version) {
            api.response_header_version(version)
        } else {
            0
        };
        return Ok(Outcome::Respond(vec![Part::Bytes(error_only(
            correlation_id,
            header_version,
        ))]));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| BrokerError::Malformed(format!("{name} v{version} header: {e}")))?;
    let request = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| BrokerError::Malformed(format!("{name} v{version} body: {e}")))?;
    let (response, files) = match request {
        RequestKind::Fetch(r) => {
            let (response, files) = fetch::fetch(broker, r, version).await;
            (Some(ResponseKind::Fetch(response)), files)
        }
        request => (
            dispatch(broker, &header, request, version).await?,
            FileRecords::default(),
        ),
    };
    broker.metrics.record(name, started.elapsed(), false);
    match response {
        Some(body) => Ok(Outcome::Respond(encode(
            correlation_id,
            api.response_header_version(version),
            &body,
            version,
            files,
        )?)),
        None => Ok(Outcome::NoResponse),
    }
}

async fn dispatch(
    b: &Broker,
    header: &RequestHeader,
    request: RequestKind,
    version: i16,
) -> Result<Option<ResponseKind>, BrokerError> {
    let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
    Ok(Some(match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(admin::metadata(b, r, version).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(admin::create_topics(b, r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(admin::delete_topics(b, r)),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(b, r))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(cluster_admin::create_partitions(b, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(cluster_admin::alter_configs(b, r))
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(cluster_admin::incremental_alter_configs(b, r))
        }
        RequestKind::DescribeCluster(_) => {
            ResponseKind::DescribeCluster(cluster_admin::describe_cluster(b))
        }
        RequestKind::Produce(r) => match produce::produce(b, r).await {
            Some(resp) => ResponseKind::Produce(resp),
            None => return Ok(None),
        },
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(txn::init_producer_id(b, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions(b, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets(b, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(b, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(b, r).await),
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe(b, r))
        }
        RequestKind::ListTransactions(r) => ResponseKind::ListTransactions(txn::list(b, r)),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(fetch::list_offsets(b, r, version).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(b, r, version))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(groups::join(b, r, client_id).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(b, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(b, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(b, r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(b, r).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(groups::offset_fetch(b, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(b, r))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(b, r)),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(b, r).await)
        }
        other => {
            // `supported` admits only the APIs matched above.
            return Err(BrokerError::Malformed(format!("no handler for {other:?}")));
        }
    }))
}

/// The ApiVersions response body: every API and version range the broker serves.
pub(crate) fn api_versions() -> ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|&(k, min, max)| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

/// A size-prefixed response: header at `header_version`, then `body` at `version`, in parts:
/// a Fetch response's records are sent from their files (see [`parts`]).
fn encode(
    correlation_id: i32,
    header_version: i16,
    body: &ResponseKind,
    version: i16,
    files: FileRecords,
) -> Result<Vec<Part>, BrokerError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let malformed =
        |e: &dyn std::fmt::Display| BrokerError::Malformed(format!("encoding a response: {e}"));
    let mut parts = match body {
        ResponseKind::Fetch(f) => {
            let mut w = parts::PartsWriter::new(256, files);
            header
                .encode(&mut w, header_version)
                .and_then(|_| f.encode(&mut w, version))
                .map_err(|e| malformed(&e))?;
            w.into_parts()
        }
        other => {
            let mut buf = BytesMut::with_capacity(256);
            header
                .encode(&mut buf, header_version)
                .and_then(|_| other.encode(&mut buf, version))
                .map_err(|e| malformed(&e))?;
            vec![Part::Bytes(buf.freeze())]
        }
    };
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let len = i32::try_from(len)
        .map_err(|_| BrokerError::Malformed(format!("a response of {len} bytes")))?;
    parts.insert(0, Part::Bytes(Bytes::copy_from_slice(&len.to_be_bytes())));
    Ok(parts)
}

/// A response header followed by just the UNSUPPORTED_VERSION error code.
fn error_only(correlation_id: i32, header_version: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(16);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    buf.put_i16(codes::UNSUPPORTED_VERSION);
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Kafka strings for the codecs.
pub(crate) fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

/// Runs blocking log work (appends, reads, commits) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Malformed(format!("log task failed: {e}")))
}
