//! `runnel.toml`, the server's configuration. Every key is optional: `runnel server` without a
//! file serves the Kafka protocol on 127.0.0.1:9092 and HTTP on 127.0.0.1:8080 over
//! `--data-dir`. Relative paths in the file are relative to the file's folder. An unknown key
//! or a bad value is an error naming the file, line and column.
//!
//! ```toml
//! [broker]
//! listen = ["127.0.0.1:9092"]      # Kafka's listeners; [] serves no Kafka protocol
//! auto_create_topics = true
//! default_partitions = 1
//!
//! [http]
//! listen = "127.0.0.1:8080"        # REST APIs, /metrics, the console
//! token = "s3cret"                 # when set, every request but /metrics needs
//!                                  # `Authorization: Bearer s3cret`
//! max_body = "1MiB"                # larger request bodies are refused (413)
//!
//! [connect]
//! worker_file = "connect.toml"     # [[connector]] tables started with the server (and
//!                                  # its topics: config.storage.topic, ...); connectors
//!                                  # created over REST are kept in connect-configs
//!
//! [jobs]
//! dir = "jobs"                     # every *.toml in it runs as a SQL job
//! ```

use anyhow::{Context, Result, anyhow};
use runnel_broker::Listener;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default)]
    pub broker: BrokerSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub connect: ConnectSection,
    #[serde(default)]
    pub jobs: JobsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    #[serde(default = "default_broker_listen")]
    pub listen: Vec<String>,
    #[serde(default = "yes")]
    pub auto_create_topics: bool,
    #[serde(default = "one")]
    pub default_partitions: u32,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            listen: default_broker_listen(),
            auto_create_topics: true,
            default_partitions: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    pub token: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            token: None,
            max_body: default_max_body(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSection {
    pub worker_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    pub dir: Option<PathBuf>,
}

fn default_broker_listen() -> Vec<String> {
    vec!["127.0.0.1:9092".into()]
}
fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> String {
    "1MiB".into()
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl ServerConfig {
    /// Reads `path`; relative paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the server config {}", path.display()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, col) = runnel_sql::job::line_col(&text, at);
            anyhow!("{}:{line}:{col}: {}", path.display(), e.message().trim())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = config.connect.worker_file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.jobs.dir.as_mut() {
            rebase(p);
        }
        Ok(config)
    }

    /// The broker's listeners, parsed.
    pub fn listeners(&self) -> Result<Vec<Listener>> {
        self.broker
            .listen
            .iter()
            .map(|l| l.parse().map_err(|e| anyhow!("[broker] listen {l:?}: {e}")))
            .collect()
    }
}
