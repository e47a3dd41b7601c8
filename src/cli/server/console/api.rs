//! `GET /api/topics` and `GET /api/groups`: what the log holds, read from it at each request.
//!
//! - Topics, sorted by name: `[{"name", "internal", "partitions": [{"partition",
//!   "start_offset", "end_offset", "size_bytes", "segments"}], "end_offset_total",
//!   "size_bytes"}]`. `internal` is the `__` prefix (`__consumer_offsets` and the like); a
//!   job's changelog and repartition topics are ordinary topics to the log. End offsets are
//!   high watermarks, so a client's rate is the change of `end_offset_total` between two
//!   requests over the time between them.
//! - Groups, sorted by name, each group with members or committed offsets: `[{"group",
//!   "state", "members", "lag", "partitions": [{"topic", "partition", "committed",
//!   "end_offset", "lag"}]}]`; lag is end offset − committed (0 when the group is ahead, as after a
//!   retention-truncated or recreated topic).

use super::{ApiError, blocking};
use axum::Json;
use axum::extract::State;
use runnel_log::Log;
use serde_json::{Value, json};

pub async fn topics(State(log): State<Log>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut names = log.topic_names();
        names.sort();
        let topics: Vec<Value> = names
            .into_iter()
            // A topic deleted since the listing is left out, not an error.
            .filter_map(|name| log.topic(&name).ok().map(|t| (name, t)))
            .map(|(name, t)| {
                let stats: Vec<_> = t.partitions().iter().map(|p| p.stats()).collect();
                json!({
                    "internal": name.starts_with("__"),
                    "name": name,
                    "end_offset_total": stats.iter().map(|s| s.end_offset).sum::<u64>(),
                    "size_bytes": stats.iter().map(|s| s.size_bytes).sum::<u64>(),
                    "partitions": stats.iter().map(|s| json!({
                        "partition": s.partition,
                        "start_offset": s.start_offset,
                        "end_offset": s.end_offset,
                        "size_bytes": s.size_bytes,
                        "segments": s.segments,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(Json(topics.into()))
    })
    .await
}

pub async fn groups(State(log): State<Log>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let coordinator = log.groups();
        let groups: Vec<Value> = coordinator
            .list_groups()
            .into_iter()
            .map(|(group, state)| {
                let d = coordinator.describe_group(&group);
                let partitions: Vec<Value> = d
                    .offsets
                    .iter()
                    .map(|(tp, c)| {
                        let end = log.partition(tp).map_or(c.offset, |p| p.high_watermark());
                        json!({
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "committed": c.offset,
                            "end_offset": end,
                            "lag": end.saturating_sub(c.offset),
                        })
                    })
                    .collect();
                let lag: u64 = partitions.iter().filter_map(|p| p["lag"].as_u64()).sum();
                json!({
                    "group": group,
                    "state": state.to_string(),
                    "members": d.members.len(),
                    "lag": lag,
                    "partitions": partitions,
                })
            })
            .collect();
        Ok(Json(groups.into()))
    })
    .await
}
