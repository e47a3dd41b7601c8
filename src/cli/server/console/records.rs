//! `GET /api/topics/{name}/records?partition=P&offset=O|timestamp=MS&limit=N`: a page of one
//! partition's records, for the console's record browser and for scripts.
//!
//! - `partition` defaults to 0; `offset` is where the page starts, `timestamp` (ms since the
//!   epoch) starts it at the first record stamped at or after it (Kafka's ListOffsets by time);
//!   neither starts at the log start. An offset outside the partition is moved into it (below
//!   the log start to the start, past the end to the end), so a browser can follow
//!   `next_offset` without knowing what retention did meanwhile.
//! - `limit` is 1 to [`MAX_LIMIT`] records, [`DEFAULT_LIMIT`] by default.
//! - Answer: `{"topic", "partition", "start_offset", "end_offset", "next_offset", "records":
//!   [{"offset", "timestamp", "key", "key_encoding", "value", "value_encoding", "headers":
//!   [{"key", "value", "value_encoding"}]}]}`. Bytes are given as text when they are UTF-8
//!   (`"utf-8"`), as base64 otherwise (`"base64"`); a null key or value has a null encoding.
//!   `next_offset` is where the next page starts.
//! - Records are read up to the high watermark without regard to transactions (read
//!   uncommitted: an open or aborted transaction's records are shown, its markers are not),
//!   as a debugging view of what the log holds.
//! - Errors: 400 naming the parameter (unknown, malformed, both `offset` and `timestamp`, a
//!   partition the topic lacks, a limit out of range), 404 for an unknown topic.

use super::{ApiError, blocking};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use base64::Engine;
use runnel_log::batch;
use runnel_log::{Log, Partition, Record};
use serde_json::{Value, json};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// Bytes asked of the log per read; a page may take several.
const READ_BYTES: usize = 1 << 20;

#[derive(Debug, PartialEq)]
enum Seek {
    LogStart,
    Offset(u64),
    Timestamp(i64),
}

#[derive(Debug, PartialEq)]
struct PageQuery {
    partition: u32,
    seek: Seek,
    limit: usize,
}

pub async fn browse(
    State(log): State<Log>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse(query.as_deref().unwrap_or(""))?;
    blocking(move || {
        let partition = log.topic(&topic)?.partition(q.partition)?;
        page(&partition, &q)
    })
    .await
    .map(Json)
}

fn parse(query: &str) -> Result<PageQuery, ApiError> {
    let mut q = PageQuery {
        partition: 0,
        seek: Seek::LogStart,
        limit: DEFAULT_LIMIT,
    };
    let mut seen_seek = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // The values are numbers: none needs percent-decoding.
        fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
            value.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "parameter `{name}` must be a whole number, got `{value}`"
                ))
            })
        }
        match name {
            "partition" => q.partition = number(name, value)?,
            "offset" | "timestamp" if seen_seek => {
                return Err(ApiError::bad_request(format!(
                    "parameter `{name}`: give one of `offset` and `timestamp`, once"
                )));
            }
            "offset" => (q.seek, seen_seek) = (Seek::Offset(number(name, value)?), true),
            "timestamp" => (q.seek, seen_seek) = (Seek::Timestamp(number(name, value)?), true),
            "limit" => {
                q.limit = number(name, value)?;
                if !(1..=MAX_LIMIT).contains(&q.limit) {
                    return Err(ApiError::bad_request(format!(
                        "parameter `limit` must be from 1 to {MAX_LIMIT}, got {}",
                        q.limit
                    )));
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{name}`: use partition, offset or timestamp, and limit"
                )));
            }
        }
    }
    Ok(q)
}

/// Reads the page `q` asks of `p` (blocking).
fn page(p: &Partition, q: &PageQuery) -> Result<Value, ApiError> {
    let (log_start, end) = (p.log_start_offset(), p.high_watermark());
    let from = match q.seek {
        Seek::LogStart => log_start,
        Seek::Offset(o) => o.clamp(log_start, end),
        Seek::Timestamp(ts) => p.offset_for_timestamp(ts)?.unwrap_or(end),
    };
    let mut records: Vec<Record> = Vec::new();
    let mut next = from;
    'reading: while next < end {
        let fetched = p.read(next, READ_BYTES)?;
        if fetched.batches.is_empty() {
            break;
        }
        for b in batch::split_batches(&fetched.batches) {
            let header = batch::parse_header(&b)?;
            if !header.is_control() {
                let from = next;
                for r in batch::records(&b)?.into_iter().filter(|r| r.offset >= from) {
                    if records.len() == q.limit {
                        break 'reading;
                    }
                    next = r.offset + 1;
                    records.push(r);
                }
            }
            // Past the batch's last offset, which compaction may have left without a record.
            next = next.max(header.next_offset());
        }
    }
    Ok(json!({
        "topic": &*p.topic,
        "partition": p.id,
        "start_offset": log_start,
        "end_offset": end,
        "next_offset": next,
        "records": records.iter().map(record_json).collect::<Vec<_>>(),
    }))
}

fn record_json(r: &Record) -> Value {
    let (key, key_encoding) = encoded(r.key.as_deref());
    let (value, value_encoding) = encoded(r.value.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let (value, value_encoding) = encoded(h.value.as_deref());
            json!({"key": h.key, "value": value, "value_encoding": value_encoding})
        })
        .collect();
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    })
}

/// Bytes as JSON text, and how they were encoded into it.
fn encoded(bytes: Option<&[u8]>) -> (Value, Value) {
    match bytes {
        None => (Value::Null, Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (text.into(), "utf-8".into()),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(b).into(),
                "base64".into(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_parsed_and_bad_ones_name_their_parameter() {
        assert_eq!(
            parse("partition=2&timestamp=-5&limit=10").unwrap(),
            PageQuery {
                partition: 2,
                seek: Seek::Timestamp(-5),
                limit: 10
            }
        );
        assert_eq!(parse("").unwrap().seek, Seek::LogStart);
        assert_eq!(parse("offset=7").unwrap().seek, Seek::Offset(7));
        for (query, named) in [
            ("partition=x", "`partition`"),
            ("offset=-1", "`offset`"),
            ("offset=1&timestamp=2", "`timestamp`"),
            ("limit=0", "`limit`"),
            ("limit=501", "`limit`"),
            ("size=3", "`size`"),
        ] {
            let e = parse(query).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(named), "{query}: {}", e.message);
        }
    }

    #[test]
    fn bytes_are_text_when_utf8_and_base64_otherwise() {
        assert_eq!(encoded(Some(b"h\xc3\xa9")), ("hé".into(), "utf-8".into()));
        assert_eq!(
            encoded(Some(&[0xff, 0xfe])),
            ("//4=".into(), "base64".into())
        );
        assert_eq!(encoded(None), (Value::Null, Value::Null));
    }
}
