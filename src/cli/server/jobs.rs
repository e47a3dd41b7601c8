//! The server's SQL jobs: those of the jobs folder and those submitted over HTTP, each run by
//! the engine on the server's embedded log, with the connectors its file declares in the
//! server's Connect worker.
//!
//! Contract: a job's name (`[job] name`) is unique in the server. A submitted job's text is
//! stored in `DATA/.runnel/jobs/<name>.toml` before it starts, so it runs again after a
//! restart until it is deleted; a job of the jobs folder lives as long as its file. Stopping a
//! job lets it finish its current commit (as `runnel run` does on SIGINT); a job that fails is
//! kept with its error until deleted or submitted again. A job stopped over HTTP keeps its
//! state and offsets and stays stopped (a marker file beside the stored texts) until resumed.
//! A bad job text is refused before anything is stored or started, with the planner's
//! `line:column: message` errors.

use super::metrics::JobView;
use anyhow::{Context, Result, anyhow};
use parking_lot::Mutex;
use runnel_connectors::Worker;
use runnel_engine::App;
use runnel_engine::stats::AppStats;
use runnel_log::SharedLogClient;
use runnel_sql::SqlJob;
use runnel_sql::query::QueryView;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A file of the jobs folder.
    File,
    /// `POST /jobs`.
    Submitted,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Starting,
    Running,
    Stopped,
    Failed { error: String },
}

/// One job the server holds.
pub struct Job {
    pub name: String,
    pub origin: Origin,
    pub text: String,
    /// The topology, as `runnel explain` prints it.
    pub topology: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// The connectors its file declares, run in the server's worker while it exists.
    pub connectors: Vec<String>,
    pub state: Mutex<JobState>,
    pub stats: Arc<AppStats>,
    /// The running application, for interactive queries of its stores.
    pub app: Arc<App>,
    /// The outputs interactive queries can read.
    pub views: Vec<Arc<QueryView>>,
    stop: Arc<AtomicBool>,
}

/// Why a job was refused.
#[derive(Debug)]
pub enum Refused {
    /// The text does not plan (400).
    Invalid(String),
    /// Another job has the name (409).
    Exists(String),
    /// No such job (404).
    Unknown(String),
    /// A job of the jobs folder cannot be deleted over HTTP (409).
    FromFile(String),
    /// Resuming a job that runs (409).
    Running(String),
    /// Storing or starting it failed (500).
    Internal(anyhow::Error),
}

/// See the module documentation.
pub struct Jobs {
    client: SharedLogClient,
    worker: Worker,
    store: PathBuf,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Jobs {
    /// The registry over `client`, storing submitted jobs under `data_dir`.
    pub fn new(client: SharedLogClient, worker: Worker, data_dir: &Path) -> Result<Arc<Self>> {
        let store = data_dir.join(".runnel").join("jobs");
        std::fs::create_dir_all(&store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        Ok(Arc::new(Self {
            client,
            worker,
            store,
            jobs: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Starts the stored submitted jobs and every `*.toml` of `dir`. A file that does not plan
    /// stops the server's start (as `runnel run` would refuse it); a stored job that no longer
    /// plans is kept as failed.
    pub fn start_saved(self: &Arc<Self>, dir: Option<&Path>) -> Result<()> {
        if let Some(dir) = dir {
            for path in toml_files(dir)? {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let job = SqlJob::parse(&path, &text).map_err(|e| anyhow!("{e}"))?;
                self.start(job, text, Origin::File)
                    .map_err(|r| anyhow!("{}: {}", path.display(), r.message()))?;
            }
        }
        for path in toml_files(&self.store)? {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match SqlJob::parse(Path::new(""), &text) {
                Ok(job) => {
                    if let Err(r) = self.start(job, text, Origin::Submitted) {
                        tracing::error!(path = %path.display(), error = r.message(), "cannot start a stored job");
                    }
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "a stored job no longer plans")
                }
            }
        }
        Ok(())
    }

    /// `POST /jobs`: plans `text`, stores it, starts it.
    pub fn submit(self: &Arc<Self>, text: String) -> std::result::Result<Arc<Job>, Refused> {
        let job = SqlJob::parse(Path::new(""), &text)
            .map_err(|e| Refused::Invalid(e.to_string().trim_start_matches(':').to_string()))?;
        let name = job.job().name.clone();
        if self.jobs.lock().contains_key(&name) {
            return Err(Refused::Exists(name));
        }
        let path = self.stored_path(&name);
        std::fs::write(&path, &text)
            .with_context(|| format!("cannot store the job in {}", path.display()))
            .map_err(Refused::Internal)?;
        self.start(job, text, Origin::Submitted)
    }

    /// `POST /jobs/{name}/stop`: the job stops after its next commit and stays stopped (also
    /// across restarts of the server) until resumed; its state and offsets are kept.
    pub fn stop(&self, name: &str) -> std::result::Result<Arc<Job>, Refused> {
        let job = self.get(name)?;
        let marker = self.stopped_marker(name);
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))
            .map_err(Refused::Internal)?;
        job.stop.store(true, Ordering::SeqCst);
        Ok(job)
    }

    /// `POST /jobs/{name}/resume`: runs a stopped or failed job again from its text, from
    /// where it committed.
    pub fn resume(self: &Arc<Self>, name: &str) -> std::result::Result<Arc<Job>, Refused> {
        let old = self.get(name)?;
        if matches!(*old.state.lock(), JobState::Running | JobState::Starting) {
            return Err(Refused::Running(name.to_string()));
        }
        let job = SqlJob::parse(Path::new(""), &old.text)
            .map_err(|e| Refused::Invalid(e.to_string().trim_start_matches(':').to_string()))?;
        let marker = self.stopped_marker(name);
        if marker.exists() {
            std::fs::remove_file(&marker)
                .with_context(|| format!("cannot remove {}", marker.display()))
                .map_err(Refused::Internal)?;
        }
        self.jobs.lock().remove(name);
        self.start(job, old.text.clone(), old.origin)
    }

    fn start(
        self: &Arc<Self>,
        job: SqlJob,
        text: String,
        origin: Origin,
    ) -> std::result::Result<Arc<Job>, Refused> {
        let name = job.job().name.clone();
        let stopped = self.stopped_marker(&name).exists();
        let mut jobs = self.jobs.lock();
        if jobs.contains_key(&name) {
            return Err(Refused::Exists(name));
        }
        let app = Arc::new(
            job.app(self.client.clone(), false)
                .map_err(|e| Refused::Internal(e.into()))?,
        );
        let connectors = super::super::run::job_connectors(&job)
            .map_err(|e| Refused::Invalid(format!("{e:#}")))?;
        let entry = Arc::new(Job {
            name: name.clone(),
            origin,
            text,
            topology: job.topology().describe(),
            inputs: job.job().inputs.iter().map(|i| i.topic.clone()).collect(),
            outputs: job.job().outputs.iter().map(|o| o.topic.clone()).collect(),
            connectors: connectors.iter().map(|c| c.name.clone()).collect(),
            state: Mutex::new(JobState::Starting),
            stats: app.stats(),
            stop: app.stop_flag(),
            views: job.views().to_vec(),
            app: app.clone(),
        });
        jobs.insert(name.clone(), entry.clone());
        drop(jobs);
        if stopped {
            *entry.state.lock() = JobState::Stopped;
            return Ok(entry);
        }
        let (this, running) = (self.clone(), entry.clone());
        tokio::spawn(async move {
            let outcome = this.run(job, connectors, app, &running).await;
            let mut state = running.state.lock();
            *state = match outcome {
                Ok(()) => JobState::Stopped,
                Err(e) => {
                    tracing::error!(job = %running.name, error = %format!("{e:#}"), "job failed");
                    JobState::Failed {
                        error: format!("{e:#}"),
                    }
                }
            };
        });
        Ok(entry)
    }

    async fn run(
        &self,
        job: SqlJob,
        connectors: Vec<runnel_connectors::ConnectorConfig>,
        app: Arc<App>,
        entry: &Job,
    ) -> Result<()> {
        for config in connectors {
            // A connector of an earlier run of the same job is already there.
            if !self.worker.names().contains(&config.name) {
                self.worker.create(config)?;
            }
        }
        job.prepare(&self.client, |_| {}).await?;
        *entry.state.lock() = JobState::Running;
        tracing::info!(job = %entry.name, "job running");
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || app.run(&handle))
            .await
            .context("the job's thread panicked")??;
        Ok(())
    }

    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().values().cloned().collect()
    }

    /// The jobs as `/metrics` sees them.
    pub fn views(&self) -> Vec<JobView> {
        self.list()
            .iter()
            .map(|j| JobView {
                name: j.name.clone(),
                running: matches!(*j.state.lock(), JobState::Running),
                stats: j.stats.clone(),
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> std::result::Result<Arc<Job>, Refused> {
        self.jobs
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| Refused::Unknown(name.to_string()))
    }

    /// `DELETE /jobs/{name}`: stops the job and forgets it (and its stored text).
    pub fn delete(&self, name: &str) -> std::result::Result<(), Refused> {
        let job = self.get(name)?;
        if job.origin == Origin::File {
            return Err(Refused::FromFile(name.to_string()));
        }
        job.stop.store(true, Ordering::SeqCst);
        self.jobs.lock().remove(name);
        for c in &job.connectors {
            if let Err(e) = self.worker.delete(c) {
                tracing::warn!(job = name, connector = c, error = %e, "cannot delete the job's connector");
            }
        }
        let marker = self.stopped_marker(name);
        if marker.exists() {
            std::fs::remove_file(&marker)
                .with_context(|| format!("cannot remove {}", marker.display()))
                .map_err(Refused::Internal)?;
        }
        let path = self.stored_path(name);
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove {}", path.display()))
            .map_err(Refused::Internal)
    }

    /// Asks every job to stop after its next commit, and waits until they have (or `limit`).
    pub async fn stop_all(&self, limit: std::time::Duration) {
        let jobs = self.list();
        for j in &jobs {
            j.stop.store(true, Ordering::SeqCst);
        }
        let deadline = tokio::time::Instant::now() + limit;
        while jobs
            .iter()
            .any(|j| matches!(*j.state.lock(), JobState::Running | JobState::Starting))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn stored_path(&self, name: &str) -> PathBuf {
        self.store.join(format!("{name}.toml"))
    }

    /// Present while the job is stopped over HTTP.
    fn stopped_marker(&self, name: &str) -> PathBuf {
        self.store.join(format!("{name}.stopped"))
    }
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Refused::Invalid(m) => m.clone(),
            Refused::Exists(n) => {
                format!("a job named {n:?} exists; delete it first (DELETE /jobs/{n})")
            }
            Refused::Unknown(n) => format!("no job named {n:?} (GET /jobs lists them)"),
            Refused::FromFile(n) => format!(
                "job {n:?} comes from the jobs folder; remove its file and restart the server to drop it"
            ),
            Refused::Running(n) => {
                format!("job {n:?} is running; stop it first (POST /jobs/{n}/stop)")
            }
            Refused::Internal(e) => format!("{e:#}"),
        }
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the jobs folder {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
