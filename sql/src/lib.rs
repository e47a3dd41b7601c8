//! `runnel-sql`: SQL jobs, a TOML file declaring inputs, outputs and `INSERT INTO ... SELECT`
//! statements, run on the same topology runtime as the Rust DSL, its operators written on the
//! engine's operator API ([`runnel_engine::operator`]).
//!
//! [`SqlJob::load`] parses the file ([`job`]), plans each statement with DataFusion
//! ([`plan`]) and builds the engine topology ([`build`]) — once per job, never per batch.
//! [`SqlJob::prepare`] creates the input topics and runs built-in generators;
//! [`SqlJob::app`] gives the [`App`] to run. [`SqlJob::explain`] shows the plans and topology.

#![forbid(unsafe_code)]

mod accumulator;
pub mod build;
mod changes;
mod chunk;
mod columns;
mod flat_json;
pub mod job;
mod json_object;
mod json_text;
pub mod nexmark;
#[cfg(any(test, feature = "test-util"))]
pub mod oracle;
mod over;
pub mod plan;
pub mod query;
pub mod row;
mod tvf;

use job::{Generator, JobFile};
use runnel_engine::error::Result;
use runnel_engine::runtime::{App, StreamsConfig};
use runnel_engine::topology::Topology;
use runnel_log::{ProducerConfig, ProducerRecord, SharedLogClient, TopicConfig, TopicPartition};
use std::fmt::Write;
use std::path::Path;

/// `what: error`: why a step failed (the task stops with it, naming the record).
pub(crate) fn why<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A planned SQL job, ready to run.
pub struct SqlJob {
    pub plan: plan::JobPlan,
    topology: Topology,
    views: Vec<std::sync::Arc<query::QueryView>>,
}

impl SqlJob {
    /// Reads, checks and plans a job file.
    ///
    /// # Errors
    ///
    /// - `EngineError::Io` if the file cannot be read;
    /// - `EngineError::Job`, placed at `file:line:col`, for everything [`SqlJob::parse`] refuses.
    pub fn load(path: &Path) -> Result<Self> {
        Self::new(JobFile::load(path)?)
    }

    /// Plans a job from its text (`path` names it in errors).
    ///
    /// # Errors
    ///
    /// `EngineError::Job`, placed at `file:line:col` where it can be:
    /// - TOML that does not parse, or has unknown or missing keys;
    /// - an input without a schema, with an unsupported column type, an unknown generator, or a
    ///   key or event-time column that is not one of its columns (or of the wrong type);
    /// - an unknown `guarantee` or an invalid duration;
    /// - SQL that does not parse or plan (an unknown table or column, with the closest names),
    ///   or that streaming jobs do not support yet (an aggregate whose state cannot be stored, ...);
    /// - an output key column not in the statement's SELECT list, or a join whose left side is a
    ///   GROUP BY result.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        Self::new(JobFile::parse(path, text)?)
    }

    fn new(job: JobFile) -> Result<Self> {
        let plan = plan::plan(job)?;
        let (topology, views) = build::build(&plan)?;
        let views = views.into_iter().map(std::sync::Arc::new).collect();
        Ok(Self {
            plan,
            topology,
            views,
        })
    }

    pub fn job(&self) -> &JobFile {
        &self.plan.job
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Each statement's DataFusion logical plan and streaming steps, then the topology.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for (i, st) in self.plan.statements.iter().enumerate() {
            let _ = writeln!(
                out,
                "Statement {} → {}",
                i + 1,
                plan::describe_output(&st.output)
            );
            let _ = writeln!(out, "  Logical plan (DataFusion):");
            for line in st.logical.display_indent().to_string().lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out, "  Streaming steps:");
            for line in st.describe_steps().lines() {
                let _ = writeln!(out, "    {line}");
            }
            if st.root.is_upsert() {
                let _ = writeln!(
                    out,
                    "  Output: upsert stream (key = the group columns; a deleted row is a tombstone)"
                );
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Guarantee: {} (commit interval {:?})\n",
            self.job().guarantee,
            StreamsConfig::new("")
                .guarantee(self.job().guarantee)
                .commit_interval
        );
        out.push_str(&self.topology.describe());
        out
    }

    /// Creates missing input topics, and fills empty generator inputs (progress: events done).
    ///
    /// # Errors
    ///
    /// `EngineError::Log` if an input topic cannot be created, its end offsets cannot be read,
    /// or the generator's records cannot be produced or flushed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. Topics created stay created, and a generator input cut off half filled
    /// is not filled again by the next call: it fills only inputs that are empty. Records sent but
    /// not flushed when the future is dropped may or may not be written.
    pub async fn prepare(&self, client: &SharedLogClient, progress: impl Fn(u64)) -> Result<()> {
        let job = self.job();
        for input in &job.inputs {
            let cfg = TopicConfig {
                partitions: input.partitions,
                ..Default::default()
            };
            client.ensure_topic(&input.topic, &cfg).await?;
        }
        let generated: Vec<_> = job
            .inputs
            .iter()
            .filter_map(|i| {
                i.generator
                    .as_ref()
                    .map(|Generator::Nexmark { stream, events }| (i, stream.clone(), *events))
            })
            .collect();
        let Some(events) = generated.iter().map(|g| g.2).max() else {
            return Ok(());
        };
        let mut empty = Vec::new();
        for (input, stream, _) in &generated {
            let parts: Vec<_> = (0..input.partitions)
                .map(|p| TopicPartition::new(input.topic.as_str(), p))
                .collect();
            let ends = client.end_offsets(&parts).await?;
            if ends.iter().all(|e| *e == 0) {
                empty.push((stream.clone(), input.topic.clone(), input.partitions));
            }
        }
        if empty.is_empty() {
            return Ok(());
        }
        let producer = client.producer(ProducerConfig::default());
        let mut buf = Vec::with_capacity(512);
        for (n, event) in nexmark::events(events).enumerate() {
            buf.clear();
            let (stream, ts, id) = nexmark::write_json(&event, &mut buf);
            if let Some((_, topic, partitions)) = empty.iter().find(|(s, ..)| s == stream) {
                let key = id.map(|id| id.to_string());
                let mut record = ProducerRecord::new(topic, &buf).timestamp(ts);
                match &key {
                    // Keyed by id: a table's key decides its partition.
                    Some(k) => record = record.key(k.as_bytes()),
                    // Spread by event number: the generator's order is event-time order.
                    None => record = record.partition((n as u32) % partitions),
                }
                producer.send(record).await?;
            }
            if n % 65_536 == 0 {
                progress(n as u64);
            }
        }
        producer.flush().await?;
        progress(events);
        Ok(())
    }

    /// A fresh topology of this job (to run it with an [`App`] configured by hand).
    ///
    /// # Errors
    ///
    /// `EngineError::Job` as [`SqlJob::parse`]'s build step; not for a job that was loaded, whose
    /// plan built once already.
    pub fn topology_for_run(&self) -> Result<Topology> {
        Ok(build::build(&self.plan)?.0)
    }

    /// The outputs that interactive queries can read ([`query`]), each with its key columns.
    pub fn views(&self) -> &[std::sync::Arc<query::QueryView>] {
        &self.views
    }

    /// The application running this job (`until_end`: stop once the inputs are consumed and
    /// every window closed).
    ///
    /// # Errors
    ///
    /// As [`SqlJob::topology_for_run`].
    pub fn app(&self, client: SharedLogClient, until_end: bool) -> Result<App> {
        let mut config = StreamsConfig::new(&self.job().name).guarantee(self.job().guarantee);
        config.until_end = until_end;
        config.compression = self.job().compression;
        config.num_standby_replicas = self.job().standby_replicas;
        config.storage = self.job().state;
        config.state_dir = self.job().state_dir.clone();
        if let Some(n) = self.job().threads {
            config.num_threads = n.max(1);
        }
        Ok(App::new(self.topology_for_run()?, client, config))
    }
}
