//! The REST API, with Kafka Connect's paths and JSON shapes, on axum.
//!
//! `GET /`, `GET/POST /connectors`, `GET/DELETE /connectors/{name}`, `GET/PUT
//! /connectors/{name}/config`, `GET /connectors/{name}/status`, `PUT .../pause`, `PUT
//! .../resume`, `POST .../restart`, `GET .../offsets`, `GET /connector-plugins`, `PUT
//! /connector-plugins/{class}/config/validate`. Errors are Connect's `{"error_code",
//! "message"}` with the matching HTTP status.

use crate::config::ConnectorConfig;
use crate::error::ConnectError;
use crate::registry::{self, PLUGINS};
use crate::runtime::worker::Worker;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

type Reply = Result<Response, ApiError>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.0.as_u16(), "message": self.1 });
        (self.0, Json(body)).into_response()
    }
}

impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> Self {
        let code = match e {
            ConnectError::NotFound(_) => StatusCode::NOT_FOUND,
            ConnectError::Exists(_) => StatusCode::CONFLICT,
            ConnectError::Config { .. } | ConnectError::UnknownClass { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// The router over a worker.
pub fn router(worker: Worker) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(get_config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/offsets", get(offsets))
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{class}/config/validate", put(validate))
        .with_state(worker)
}

async fn root() -> Json<Value> {
    Json(
        json!({ "version": env!("CARGO_PKG_VERSION"), "commit": "runnel", "kafka_cluster_id": "runnel" }),
    )
}

async fn list(State(w): State<Worker>) -> Json<Vec<String>> {
    Json(w.names())
}

fn describe(w: &Worker, name: &str) -> Result<Value, ConnectError> {
    let config = w.config(name)?;
    Ok(json!({
        "name": name,
        "config": config.props,
        "tasks": [{ "connector": name, "task": 0 }],
        "type": w.kind(name)?,
    }))
}

async fn create(State(w): State<Worker>, Json(body): Json<Value>) -> Reply {
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "missing \"name\"".into()))?;
    let config = ConnectorConfig::from_json(Some(name), &body["config"])?;
    w.create(config)?;
    Ok((StatusCode::CREATED, Json(describe(&w, name)?)).into_response())
}

async fn info(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    Ok(Json(describe(&w, &name)?).into_response())
}

async fn delete(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    w.delete(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_config(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    Ok(Json(w.config(&name)?.props).into_response())
}

/// Creates the connector, or restarts it with the new configuration (Connect's upsert).
async fn put_config(
    State(w): State<Worker>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let config = ConnectorConfig::from_json(Some(&name), &body)?;
    let created = !w.names().contains(&name);
    if created {
        w.create(config)?;
    } else {
        w.restart(&name, Some(config))?;
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(describe(&w, &name)?)).into_response())
}

async fn status(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    let s = w.status(&name)?;
    let mut task = json!({ "id": 0, "state": s.state, "worker_id": "runnel" });
    if let Some(t) = &s.trace {
        task["trace"] = json!(t);
    }
    Ok(Json(json!({
        "name": name,
        "connector": { "state": s.state, "worker_id": "runnel" },
        "tasks": [task],
        "type": w.kind(&name)?,
    }))
    .into_response())
}

async fn pause(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    w.pause(&name)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    w.resume(&name)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn restart(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    w.restart(&name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn offsets(State(w): State<Worker>, Path(name): Path<String>) -> Reply {
    w.config(&name)?;
    let offsets: Vec<Value> = w
        .offsets(&name)
        .await
        .into_iter()
        .map(|(p, o)| json!({ "partition": p, "offset": o }))
        .collect();
    Ok(Json(json!({ "offsets": offsets })).into_response())
}

async fn plugins() -> Json<Vec<Value>> {
    Json(
        PLUGINS
            .iter()
            .map(|p| json!({ "class": p.class, "type": p.kind, "version": env!("CARGO_PKG_VERSION") }))
            .collect(),
    )
}

async fn validate(Path(class): Path<String>, Json(body): Json<Value>) -> Reply {
    let mut body = body;
    if body.get("connector.class").is_none() {
        body["connector.class"] = json!(class);
    }
    let name = body["name"].as_str().unwrap_or("validate").to_string();
    let plugin = registry::plugin(&class)?;
    let errors: Vec<String> =
        match ConnectorConfig::from_json(Some(&name), &body).and_then(|c| registry::build(&c)) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        };
    Ok(Json(json!({
        "name": plugin.class,
        "error_count": errors.len(),
        "groups": ["Common"],
        "configs": [{ "value": { "name": "connector", "errors": errors } }],
    }))
    .into_response())
}
