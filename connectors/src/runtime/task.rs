//! What every task shares: its [`TaskContext`] (its number, the pause switch, its status, the
//! connector's active topics), the [`supervise`] loop that runs it and restarts it after a
//! failure with exponential backoff (1 s doubling to 60 s; `errors.retry.delay.max.ms`, Kafka
//! Connect's key for the longest wait between retries, lowers the cap, and the first wait with
//! it when it is under 1 s), and the dead-letter headers.

use crate::api::Connector;
use crate::config::ConnectorConfig;
use crate::error::Result;
use crate::registry;
use crate::runtime::status::{ActiveTopics, State, TaskStatus};
use crate::runtime::worker::Worker;
use crate::runtime::{sink_task, source_task};
use runnel_log::Header;
use std::time::Duration;
use tokio::sync::watch;

/// Whether a connector's tasks run or wait (paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
}

/// A running task's own things.
pub struct TaskContext {
    /// Its number among the connector's tasks, from 0, and how many there are.
    pub id: u32,
    pub count: u32,
    pub control: watch::Receiver<Control>,
    pub status: TaskStatus,
    pub topics: ActiveTopics,
}

impl TaskContext {
    /// Waits while paused.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn wait_running(&mut self) {
        while *self.control.borrow() == Control::Pause {
            if self.control.changed().await.is_err() {
                return;
            }
        }
    }

    /// RUNNING or PAUSED, as the switch says now.
    pub fn state(&self) -> State {
        match *self.control.borrow() {
            Control::Run => State::Running,
            Control::Pause => State::Paused,
        }
    }
}

/// The longest wait between restarts of a failed connector.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// `errors.retry.delay.max.ms`, or [`RETRY_DELAY_MAX`].
pub fn retry_delay_max(config: &ConnectorConfig) -> Result<Duration> {
    match config.common()?.retry_delay_max_ms {
        None => Ok(RETRY_DELAY_MAX),
        Some(0) => Err(config.error("errors.retry.delay.max.ms = 0: use at least 1".into())),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// The waits before each restart: 1 s doubling, each at most `max`.
fn backoffs(max: Duration) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_secs(1).min(max)), move |d| {
        Some((*d * 2).min(max))
    })
}

/// Runs a task; after a failure, says why and tries again with exponential backoff.
pub async fn supervise(worker: Worker, config: ConnectorConfig, mut ctx: TaskContext) {
    // Checked by the worker before it starts a task.
    let mut backoffs = backoffs(retry_delay_max(&config).unwrap_or(RETRY_DELAY_MAX));
    loop {
        let result = match registry::build(&config) {
            Ok(Connector::Source(s)) => source_task::run(&worker, &config, s, &mut ctx).await,
            Ok(Connector::Sink(s)) => sink_task::run(&worker, &config, s, &mut ctx).await,
            Err(e) => Err(e),
        };
        let Err(e) = result else { return };
        let backoff = backoffs.next().expect("endless");
        tracing::warn!(connector = %config.name, task = ctx.id, error = %e, retry_in = ?backoff, "task failed");
        ctx.status.set(State::Failed, Some(e.to_string()));
        tokio::time::sleep(backoff).await;
        ctx.status.restarted();
        ctx.status.set(ctx.state(), None);
    }
}

/// A dead letter's headers: the error, then where the record came from (`origin`).
pub fn dlq_headers(error: &str, origin: &[(&str, String)]) -> Vec<Header> {
    std::iter::once(("__connect.errors.exception.message", error.to_string()))
        .chain(origin.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| Header {
            key: k.into(),
            value: Some(v.into_bytes().into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_second_doubling_up_to_the_cap() {
        let secs = |max: u64| -> Vec<u64> {
            backoffs(Duration::from_secs(max))
                .take(8)
                .map(|d| d.as_secs())
                .collect()
        };
        assert_eq!(secs(60), [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(secs(5), [1, 2, 4, 5, 5, 5, 5, 5]);
        let ms: Vec<u128> = backoffs(Duration::from_millis(300))
            .take(3)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [300, 300, 300]);
    }

    #[test]
    fn the_retry_delay_cap_is_checked() {
        let c = |v: &str| {
            ConnectorConfig::from_json(
                Some("c"),
                &serde_json::json!({ "errors.retry.delay.max.ms": v }),
            )
            .unwrap()
        };
        assert_eq!(
            retry_delay_max(&c("250")).unwrap(),
            Duration::from_millis(250)
        );
        assert!(retry_delay_max(&c("0")).is_err());
        assert!(retry_delay_max(&c("soon")).is_err());
    }
}
