//! The server's HTTP side: the jobs API, Kafka Connect's REST API, `/metrics`.
//!
//! Contract: errors are JSON `{"error_code": <status>, "message": ...}` (Kafka Connect's
//! shape, so one client handles both APIs); a bad job is 400 with the planner's
//! `line:column: message`, an unknown job 404, a name taken 409, a body over `max_body` 413.
//! With a token configured every request needs `Authorization: Bearer <token>` (401
//! otherwise), `/metrics` included: Prometheus sends it with `authorization` in its scrape
//! config. Interactive queries answer 400 for a key that does not parse, 404 for an output
//! that is not queryable, 503 when the job is not running or does not answer in time.

use super::jobs::{Job, Jobs, Refused};
use super::metrics::{self, Sources};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runnel_engine::EngineError;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
struct AppState {
    jobs: Arc<Jobs>,
}

/// The whole HTTP API over `jobs`, the worker's REST API and the metric sources.
pub fn router(
    jobs: Arc<Jobs>,
    connect: Router,
    sources: Sources,
    token: Option<String>,
    max_body: usize,
) -> Router {
    let api = Router::new()
        .route("/jobs", get(list_jobs).post(submit_job))
        .route("/jobs/{name}", get(describe_job).delete(delete_job))
        .route("/jobs/{name}/state/{output}", get(query_state))
        .route("/jobs/{name}/stop", post(stop_job))
        .route("/jobs/{name}/resume", post(resume_job))
        .with_state(AppState { jobs });
    let app = api
        .merge(super::console::router(sources.log.clone()))
        .merge(metrics::router(sources))
        .merge(connect)
        .layer(DefaultBodyLimit::max(max_body));
    match token {
        Some(token) => {
            let expected: Arc<str> = format!("Bearer {token}").into();
            app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
                let expected = expected.clone();
                async move {
                    let given = req
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if given == Some(&*expected) {
                        next.run(req).await
                    } else {
                        error(
                            StatusCode::UNAUTHORIZED,
                            "this server needs `Authorization: Bearer <token>` ([http] token in its config)",
                        )
                    }
                }
            }))
        }
        None => app,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": status.as_u16(), "message": message})),
    )
        .into_response()
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match &self {
            Refused::Invalid(_) => StatusCode::BAD_REQUEST,
            Refused::Exists(_) | Refused::FromFile(_) | Refused::Running(_) => StatusCode::CONFLICT,
            Refused::Unknown(_) => StatusCode::NOT_FOUND,
            Refused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, &self.message())
    }
}

fn summary(j: &Job) -> serde_json::Value {
    let tasks = j.stats.tasks();
    let sum = |f: fn(&runnel_engine::stats::TaskStats) -> u64| tasks.values().map(f).sum::<u64>();
    json!({
        "name": j.name,
        "origin": j.origin,
        "status": *j.state.lock(),
        "inputs": j.inputs,
        "outputs": j.outputs,
        "tasks": tasks.len(),
        "commits": j.stats.commits(),
        "records_in": sum(|s| s.metrics.records_in),
        "records_out": sum(|s| s.metrics.records_out),
        "late_records": sum(|s| s.metrics.late_records),
        "dead_letters": sum(|s| s.metrics.dead_letters),
        "watermark": tasks.values().filter_map(|s| s.watermark).min(),
    })
}

async fn list_jobs(State(s): State<AppState>) -> Json<Vec<serde_json::Value>> {
    Json(s.jobs.list().iter().map(|j| summary(j)).collect())
}

async fn submit_job(State(s): State<AppState>, body: String) -> Result<Response, Refused> {
    let job = s.jobs.submit(body)?;
    Ok((StatusCode::CREATED, Json(summary(&job))).into_response())
}

async fn describe_job(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, Refused> {
    let j = s.jobs.get(&name)?;
    let mut v = summary(&j);
    let tasks: serde_json::Map<_, _> = j
        .stats
        .tasks()
        .into_iter()
        .map(|(task, t)| {
            (
                task,
                json!({
                    "records_in": t.metrics.records_in,
                    "records_out": t.metrics.records_out,
                    "late_records": t.metrics.late_records,
                    "dead_letters": t.metrics.dead_letters,
                    "watermark": t.watermark,
                    "state_entries": t.store_entries,
                }),
            )
        })
        .collect();
    v["task_stats"] = tasks.into();
    v["operators"] = operators(&j.stats.tasks()).into();
    v["queryable_outputs"] = j
        .views
        .iter()
        .map(|q| json!({"output": q.output, "key": q.key_names}))
        .collect::<Vec<_>>()
        .into();
    v["topology"] = j.topology.clone().into();
    v["text"] = j.text.clone().into();
    Ok(Json(v))
}

/// `GET /jobs/{name}/state/{output}?key=...[&timeout_ms=...]`: an interactive query (see
/// `runnel_sql::query`); without `key`, every key's rows.
async fn query_state(
    State(s): State<AppState>,
    Path((name, output)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Refused> {
    let j = s.jobs.get(&name)?;
    let Some(view) = j.views.iter().find(|v| v.output == output).cloned() else {
        let queryable: Vec<&str> = j.views.iter().map(|v| v.output.as_str()).collect();
        return Ok(error(
            StatusCode::NOT_FOUND,
            &format!(
                "job {name} has no queryable output {output:?}; queryable (GROUP BY results): {}",
                if queryable.is_empty() {
                    "none".to_string()
                } else {
                    queryable.join(", ")
                }
            ),
        ));
    };
    let timeout = match params.get("timeout_ms").map(|t| t.parse::<u64>()) {
        None => Duration::from_secs(5),
        Some(Ok(ms)) => Duration::from_millis(ms),
        Some(Err(_)) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "timeout_ms: give a whole number of milliseconds",
            ));
        }
    };
    let key = params.get("key").cloned();
    let app = j.app.clone();
    let answer = tokio::task::spawn_blocking(move || {
        runnel_sql::query::query(&app, &view, key.as_deref(), timeout)
    })
    .await
    .map_err(|e| Refused::Internal(e.into()))?;
    Ok(match answer {
        Ok(a) => {
            let mut v = serde_json::to_value(&a).map_err(|e| Refused::Internal(e.into()))?;
            v["job"] = name.into();
            v["output"] = output.into();
            Json(v).into_response()
        }
        Err(EngineError::Job(m)) => error(StatusCode::BAD_REQUEST, &m),
        Err(e @ EngineError::Query(_)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

/// Each operator's records in and out, summed over the tasks that run it, in topology order.
fn operators(
    tasks: &std::collections::BTreeMap<String, runnel_engine::stats::TaskStats>,
) -> Vec<serde_json::Value> {
    let mut sums: Vec<(Arc<str>, u64, u64)> = Vec::new();
    for t in tasks.values() {
        for op in &t.operators {
            match sums.iter_mut().find(|(name, ..)| *name == op.name) {
                Some(s) => {
                    s.1 += op.records_in;
                    s.2 += op.records_out;
                }
                None => sums.push((op.name.clone(), op.records_in, op.records_out)),
            }
        }
    }
    sums.into_iter()
        .map(|(name, i, o)| json!({"name": &*name, "records_in": i, "records_out": o}))
        .collect()
}

async fn stop_job(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Refused> {
    let job = s.jobs.stop(&name)?;
    Ok((StatusCode::ACCEPTED, Json(summary(&job))).into_response())
}

async fn resume_job(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Refused> {
    let job = s.jobs.resume(&name)?;
    Ok((StatusCode::ACCEPTED, Json(summary(&job))).into_response())
}

async fn delete_job(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Refused> {
    s.jobs.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
