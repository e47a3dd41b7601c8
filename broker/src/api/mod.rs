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
//!   connection is closed by the caller. So is any request but ApiVersions, SaslHandshake and
//!   SaslAuthenticate before a SASL listener's client authenticated ([`sasl`]).
//! - Every API checks the session's principal against the ACLs ([`authz`]).

pub(crate) mod admin;
pub(crate) mod authz;
pub(crate) mod cluster_admin;
pub(crate) mod fetch;
pub(crate) mod fetch_session;
pub(crate) mod groups;
pub(crate) mod parts;
pub(crate) mod produce;
pub(crate) mod sasl;
pub(crate) mod txn;

use crate::codes::{self, api_name};
use crate::error::BrokerError;
use crate::server::Broker;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, ApiKey, ApiVersionsResponse, EndTxnResponse, HeartbeatResponse,
    JoinGroupResponse, LeaveGroupResponse, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use parts::{FileRecords, Part};
use sasl::Session;
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
    (ApiKey::DeleteRecords, 0, 2),
    // After a v0 handshake the SASL tokens travel unframed (see `sasl`); librdkafka before
    // 2.x checks that v0 is served before it uses v1.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

pub(crate) enum Outcome {
    /// A size-prefixed response, in parts written one after the other.
    Respond(Vec<Part>),
    /// Produce with acks=0: Kafka sends nothing back.
    NoResponse,
    /// A failed authentication: the answer, then the connection closes.
    RespondAndClose(Vec<Part>),
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
pub(crate) async fn handle(
    broker: &Broker,
    session: &mut Session,
    mut frame: Bytes,
) -> Result<Outcome, BrokerError> {
    if session.raw_tokens {
        return Ok(sasl::raw_token(broker, session, frame));
    }
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
    if !session.authenticated()
        && !matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Err(BrokerError::Malformed(format!(
            "{name} before SASL authentication on a {} listener",
            session.listener.protocol.name()
        )));
    }
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
    let mut close = false;
    let (response, files) = match request {
        RequestKind::Fetch(r) => {
            let (response, files) = authz::fetch(broker, session, r, version).await;
            (Some(ResponseKind::Fetch(response)), files)
        }
        RequestKind::SaslHandshake(r) => (
            Some(ResponseKind::SaslHandshake(sasl::handshake(
                session, r, version,
            ))),
            FileRecords::default(),
        ),
        RequestKind::SaslAuthenticate(r) => {
            let (response, refused) = sasl::authenticate(broker, session, r);
            close = refused;
            (
                Some(ResponseKind::SaslAuthenticate(response)),
                FileRecords::default(),
            )
        }
        request => (
            dispatch(broker, session, &header, request, version).await?,
            FileRecords::default(),
        ),
    };
    broker.metrics.record(name, started.elapsed(), false);
    let Some(body) = response else {
        return Ok(Outcome::NoResponse);
    };
    let parts = encode(
        correlation_id,
        api.response_header_version(version),
        &body,
        version,
        files,
    )?;
    Ok(if close {
        Outcome::RespondAndClose(parts)
    } else {
        Outcome::Respond(parts)
    })
}

async fn dispatch(
    b: &Broker,
    s: &Session,
    header: &RequestHeader,
    request: RequestKind,
    version: i16,
) -> Result<Option<ResponseKind>, BrokerError> {
    let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
    use crate::security::acl::Operation::Read;
    use authz::{group_denied, txn_denied};
    Ok(Some(match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(authz::metadata(b, s, r, version).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(authz::create_topics(b, s, r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(authz::delete_topics(b, s, r)),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(authz::describe_configs(b, s, r))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(authz::create_partitions(b, s, r))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(authz::alter_configs(b, s, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(authz::incremental_alter_configs(b, s, r))
        }
        RequestKind::DescribeCluster(_) => {
            ResponseKind::DescribeCluster(authz::describe_cluster(b, s))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(authz::delete_records(b, s, r).await)
        }
        RequestKind::Produce(r) => match authz::produce(b, s, r).await {
            Some(resp) => ResponseKind::Produce(resp),
            None => return Ok(None),
        },
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(authz::init_producer_id(b, s, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(authz::add_partitions_to_txn(b, s, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(
            match txn_denied(b, s, &r.transactional_id.0)
                .or_else(|| group_denied(b, s, Read, &r.group_id.0))
            {
                Some(code) => AddOffsetsToTxnResponse::default().with_error_code(code),
                None => txn::add_offsets(b, r).await,
            },
        ),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(authz::txn_offset_commit(b, s, r).await)
        }
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(match txn_denied(b, s, &r.transactional_id.0) {
                Some(code) => EndTxnResponse::default().with_error_code(code),
                None => txn::end_txn(b, r).await,
            })
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(authz::describe_transactions(b, s, r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(authz::list_transactions(b, s, r))
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(authz::list_offsets(b, s, r, version).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(authz::find_coordinator(b, s, r, version))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(match group_denied(b, s, Read, &r.group_id.0) {
                Some(code) => JoinGroupResponse::default().with_error_code(code),
                None => groups::join(b, r, client_id).await,
            })
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(match group_denied(b, s, Read, &r.group_id.0) {
                Some(code) => SyncGroupResponse::default().with_error_code(code),
                None => groups::sync(b, r).await,
            })
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(match group_denied(b, s, Read, &r.group_id.0) {
                Some(code) => HeartbeatResponse::default().with_error_code(code),
                None => groups::heartbeat(b, r),
            })
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(match group_denied(b, s, Read, &r.group_id.0) {
                Some(code) => LeaveGroupResponse::default().with_error_code(code),
                None => groups::leave(b, r),
            })
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(authz::offset_commit(b, s, r).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(authz::offset_fetch(b, s, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(authz::describe_groups(b, s, r))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(authz::list_groups(b, s, r)),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(authz::offset_delete(b, s, r).await)
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
