//! The REST API, with Kafka Connect's paths, status codes and JSON shapes, on axum.
//!
//! - `GET /`; `GET /connectors` (`?expand=status`, `?expand=info`, or both: an object keyed by
//!   connector name), `POST /connectors` (with KIP-980's `initial_state`);
//! - `GET`/`DELETE /connectors/{name}`, `GET`/`PUT .../config`, `GET .../status`;
//! - `PUT .../pause`, `.../resume`, `.../stop`; `POST .../restart?includeTasks=&onlyFailed=`
//!   (204, or 202 with the status, RESTARTING for what restarts, when either is true);
//! - `GET .../tasks`, `GET .../tasks/{id}/status`, `POST .../tasks/{id}/restart`;
//! - `GET .../topics`, `PUT .../topics/reset` (KIP-558);
//! - `GET`/`PATCH`/`DELETE .../offsets` (KIP-875: changed only while STOPPED);
//! - `GET /connector-plugins`, `PUT /connector-plugins/{class}/config/validate`.
//!
//! In a group of workers a request is served by the worker that can, forwarded there by
//! [`crate::runtime::forward`]'s middleware.
//!
//! Every error, a malformed body or an unknown path included, is Kafka Connect's
//! `{"error_code": <HTTP status>, "message": ..}`: bodies and path parameters are read by this
//! module's extractors, never axum's, whose rejections answer in plain text.

use crate::config::ConnectorConfig;
use crate::error::ConnectError;
use crate::registry::{self, PLUGINS};
use crate::runtime::configs::TargetState;
use crate::runtime::forward;
use crate::runtime::worker::{Submit, TaskView, View, Worker};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

type Reply = Result<Response, ApiError>;

/// An error answer: its status and message.
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
            ConnectError::NotFound(_) | ConnectError::TaskNotFound { .. } => StatusCode::NOT_FOUND,
            ConnectError::Exists(_) | ConnectError::Rebalancing(_) => StatusCode::CONFLICT,
            ConnectError::Config { .. }
            | ConnectError::UnknownClass { .. }
            | ConnectError::NotStopped(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// A JSON request body (whatever its `Content-Type`).
struct Body(Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let message = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
                _ => "the request body could not be read",
            };
            ApiError(e.status(), message.into())
        })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

/// Path parameters; a path whose parameters do not parse (a task id that is not a number)
/// names no resource.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(_) => Err(not_found_at(parts.uri.path())),
        }
    }
}

fn not_found_at(path: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no resource at {path}"))
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
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks/{id}/status", get(task_status))
        .route("/connectors/{name}/tasks/{id}/restart", post(restart_task))
        .route("/connectors/{name}/topics", get(topics))
        .route("/connectors/{name}/topics/reset", put(reset_topics))
        .route(
            "/connectors/{name}/offsets",
            get(offsets).patch(alter_offsets).delete(reset_offsets),
        )
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{class}/config/validate", put(validate))
        .route_layer(axum::middleware::from_fn_with_state(
            worker.clone(),
            forward::route,
        ))
        .method_not_allowed_fallback(|req: Request| async move {
            let message = format!("{} is not allowed on {}", req.method(), req.uri().path());
            ApiError(StatusCode::METHOD_NOT_ALLOWED, message)
        })
        .fallback(|req: Request| async move { not_found_at(req.uri().path()) })
        .with_state(worker)
}

async fn root() -> Json<Value> {
    Json(
        json!({ "version": env!("CARGO_PKG_VERSION"), "commit": "runnel", "kafka_cluster_id": "runnel" }),
    )
}

/// The query's `key=value` pairs, in order (the values these paths take need no decoding).
fn query(raw: Option<String>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The names, or with `?expand=status` / `?expand=info` (either or both) an object of them.
async fn list(State(w): State<Worker>, RawQuery(raw): RawQuery) -> Reply {
    let mut expand = Vec::new();
    for (k, v) in query(raw) {
        match (k.as_str(), v.as_str()) {
            ("expand", "status" | "info") => expand.push(v),
            ("expand", other) => {
                return Err(bad_request(format!(
                    "expand={other}: use expand=status or expand=info"
                )));
            }
            _ => {}
        }
    }
    if expand.is_empty() {
        return Ok(Json(w.names()).into_response());
    }
    let mut all = Map::new();
    for name in w.names() {
        // A connector deleted since the names were read is left out.
        let Ok(view) = w.view(&name) else { continue };
        let mut one = Map::new();
        for e in &expand {
            let v = match e.as_str() {
                "status" => status_of(&view),
                _ => info_of(&view),
            };
            one.insert(e.clone(), v);
        }
        all.insert(name, Value::Object(one));
    }
    Ok(Json(all).into_response())
}

/// Kafka Connect's connector info.
fn info_of(v: &View) -> Value {
    let name = &v.config.name;
    let tasks: Vec<Value> = v
        .tasks
        .iter()
        .map(|t| json!({ "connector": name, "task": t.id }))
        .collect();
    json!({ "name": name, "config": v.config.props, "tasks": tasks, "type": v.kind })
}

/// Kafka Connect's connector status.
fn status_of(v: &View) -> Value {
    let tasks: Vec<Value> = v.tasks.iter().map(task_status_of).collect();
    json!({
        "name": v.config.name,
        "connector": { "state": v.state, "worker_id": v.worker_id },
        "tasks": tasks,
        "type": v.kind,
    })
}

fn task_status_of(t: &TaskView) -> Value {
    let mut task = json!({ "id": t.id, "state": t.status.state, "worker_id": t.worker_id });
    if let Some(t) = &t.status.trace {
        task["trace"] = json!(t);
    }
    task
}

/// A configuration from a request: `config` for connector `name`, whose own `name`, if any,
/// must be the same.
fn config_of(name: &str, config: &Value) -> Result<ConnectorConfig, ApiError> {
    if let Some(n) = config.get("name").and_then(Value::as_str)
        && n != name
    {
        return Err(bad_request(format!(
            "the configuration's name {n:?} is not the connector's, {name:?}"
        )));
    }
    Ok(ConnectorConfig::from_json(Some(name), config)?)
}

async fn create(State(w): State<Worker>, Body(body): Body) -> Reply {
    let name = body["name"]
        .as_str()
        .ok_or_else(|| bad_request("missing \"name\"".into()))?;
    let config = config_of(name, &body["config"])?;
    let initial = match body.get("initial_state").and_then(Value::as_str) {
        None | Some("RUNNING") => TargetState::Started,
        Some("PAUSED") => TargetState::Paused,
        Some("STOPPED") => TargetState::Stopped,
        Some(other) => {
            return Err(bad_request(format!(
                "initial_state {other:?}: use RUNNING, PAUSED or STOPPED"
            )));
        }
    };
    w.submit(config, Submit::Create(initial)).await?;
    Ok((StatusCode::CREATED, Json(info_of(&w.view(name)?))).into_response())
}

async fn info(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    Ok(Json(info_of(&w.view(&name)?)).into_response())
}

async fn delete(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    w.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_config(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    Ok(Json(w.config(&name)?.props).into_response())
}

/// Creates the connector, or gives it the new configuration (Connect's upsert).
async fn put_config(
    State(w): State<Worker>,
    Params(name): Params<String>,
    Body(body): Body,
) -> Reply {
    let config = config_of(&name, &body)?;
    let code = match w.submit(config, Submit::Upsert).await? {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((code, Json(info_of(&w.view(&name)?))).into_response())
}

async fn status(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    Ok(Json(status_of(&w.view(&name)?)).into_response())
}

async fn pause(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    w.set_target(&name, TargetState::Paused).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    w.set_target(&name, TargetState::Started).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn stop(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    w.set_target(&name, TargetState::Stopped).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?includeTasks=&onlyFailed=`: 204 when both are false (the connector alone restarts), else
/// 202 with the status, RESTARTING for what restarts.
async fn restart(
    State(w): State<Worker>,
    Params(name): Params<String>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let (mut include_tasks, mut only_failed) = (false, false);
    for (k, v) in query(raw) {
        let flag = match k.as_str() {
            "includeTasks" => &mut include_tasks,
            "onlyFailed" => &mut only_failed,
            _ => continue,
        };
        *flag = match v.as_str() {
            "true" => true,
            "false" => false,
            other => return Err(bad_request(format!("{k}={other}: use true or false"))),
        };
    }
    let view = w.restart(&name, include_tasks, only_failed).await?;
    if !include_tasks && !only_failed {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(status_of(&view))).into_response())
}

async fn tasks(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    let tasks: Vec<Value> = w
        .view(&name)?
        .tasks
        .iter()
        .map(|t| json!({ "id": { "connector": name, "task": t.id }, "config": t.config.props }))
        .collect();
    Ok(Json(tasks).into_response())
}

async fn task_status(State(w): State<Worker>, Params((name, id)): Params<(String, u32)>) -> Reply {
    let view = w.view(&name)?;
    let task = view
        .tasks
        .iter()
        .find(|t| t.id == id)
        .ok_or(ConnectError::TaskNotFound {
            connector: name,
            task: id,
        })?;
    Ok(Json(task_status_of(task)).into_response())
}

async fn restart_task(State(w): State<Worker>, Params((name, id)): Params<(String, u32)>) -> Reply {
    w.restart_task(&name, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn topics(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    let topics = w.view(&name)?.topics;
    Ok(Json(json!({ name: { "topics": topics } })).into_response())
}

async fn reset_topics(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    w.reset_topics(&name)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn offsets(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    let offsets: Vec<Value> = w
        .offsets(&name)
        .await?
        .into_iter()
        .map(|(p, o)| json!({ "partition": p, "offset": o }))
        .collect();
    Ok(Json(json!({ "offsets": offsets })).into_response())
}

/// `{"offsets": [{"partition": {..}, "offset": {..} or null}, ..]}`.
async fn alter_offsets(
    State(w): State<Worker>,
    Params(name): Params<String>,
    Body(body): Body,
) -> Reply {
    let shape = || {
        bad_request(
            "the body is {\"offsets\": [{\"partition\": {..}, \"offset\": {..} or null}, ..]}"
                .into(),
        )
    };
    let list = body["offsets"].as_array().ok_or_else(shape)?;
    let mut changes = Vec::new();
    for entry in list {
        let offset = match &entry["offset"] {
            Value::Null => None,
            o => Some(o.clone()),
        };
        let partition = entry.get("partition").ok_or_else(shape)?;
        changes.push((partition.clone(), offset));
    }
    let message = w.alter_offsets(&name, changes).await?;
    Ok(Json(json!({ "message": message })).into_response())
}

async fn reset_offsets(State(w): State<Worker>, Params(name): Params<String>) -> Reply {
    let message = w.reset_offsets(&name).await?;
    Ok(Json(json!({ "message": message })).into_response())
}

async fn plugins() -> Json<Vec<Value>> {
    Json(
        PLUGINS
            .iter()
            .map(|p| json!({ "class": p.class, "type": p.kind, "version": env!("CARGO_PKG_VERSION") }))
            .collect(),
    )
}

async fn validate(Params(class): Params<String>, Body(body): Body) -> Reply {
    let mut body = body;
    if !body.is_object() {
        return Err(bad_request(
            "the body is the connector's configuration, a JSON object".into(),
        ));
    }
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
