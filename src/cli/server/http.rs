//! The server's HTTP side: the jobs API, Kafka Connect's REST API, `/metrics`.
//!
//! Contract: errors are JSON `{"error_code": <status>, "message": ...}` (Kafka Connect's
//! shape, so one client handles both APIs); a bad job is 400 with the planner's
//! `line:column: message`, an unknown job 404, a name taken 409, a body over `max_body` 413.
//! With a token configured every request needs `Authorization: Bearer <token>` (401
//! otherwise), `/metrics` included: Prometheus sends it with `authorization` in its scrape
//! config.

use super::jobs::{Job, Jobs, Refused};
use super::metrics::{Sources, render};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    jobs: Arc<Jobs>,
    sources: Sources,
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
        .route("/metrics", get(metrics))
        .merge(super::console::router::<AppState>(sources.log.clone()))
        .with_state(AppState { jobs, sources });
    let app = api.merge(connect).layer(DefaultBodyLimit::max(max_body));
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
            Refused::Exists(_) | Refused::FromFile(_) => StatusCode::CONFLICT,
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
    v["topology"] = j.topology.clone().into();
    v["text"] = j.text.clone().into();
    Ok(Json(v))
}

async fn delete_job(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Refused> {
    s.jobs.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let sources = s.sources.clone();
    match tokio::task::spawn_blocking(move || render(&sources)).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
