//! `runnel groups`: lists consumer groups and shows a group's committed offsets, the end offset
//! (high watermark) of each of those partitions and the lag between them, plus its members.
//!
//! Groups are coordinated inside the process that has the data directory open, so a group
//! seen from this command has no live members unless this process runs one; its committed
//! offsets are what it shows.

use super::output;
use anyhow::{Result, bail};
use clap::Subcommand;
use runnel_log::{Log, assignor};

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the consumer groups.
    List,
    /// Show a group's committed offsets, lag and members.
    Describe {
        /// The group.
        group: String,
    },
}

pub fn run(log: &Log, cmd: GroupsCommand) -> Result<()> {
    match cmd {
        GroupsCommand::List => list(log),
        GroupsCommand::Describe { group } => describe(log, &group),
    }
}

fn list(log: &Log) -> Result<()> {
    let mut t = output::table(&["group", "state", "members"], &[2]);
    for (group, state) in log.groups().list_groups() {
        let members = log.groups().describe_group(&group).members.len();
        t.add_row(vec![group, state.to_string(), members.to_string()]);
    }
    output::print(t)
}

fn describe(log: &Log, group: &str) -> Result<()> {
    let d = log.groups().describe_group(group);
    if d.offsets.is_empty() && d.members.is_empty() {
        bail!(
            "consumer group {group:?} does not exist: it has no members and no committed offsets; `runnel groups list` shows the groups"
        );
    }
    let mut text = format!(
        "group {group}: {}, {}\n",
        d.state,
        output::count(d.members.len() as u64, "member")
    );
    let mut offsets = output::table(
        &[
            "topic",
            "partition",
            "committed offset",
            "end offset",
            "lag",
        ],
        &[1, 2, 3, 4],
    );
    for (tp, committed) in &d.offsets {
        let (end, lag) = match log.partition(tp) {
            Ok(p) => {
                let end = p.high_watermark();
                (
                    end.to_string(),
                    end.saturating_sub(committed.offset).to_string(),
                )
            }
            Err(_) => ("(deleted)".to_string(), "-".to_string()),
        };
        offsets.add_row(vec![
            tp.topic.clone(),
            tp.partition.to_string(),
            committed.offset.to_string(),
            end,
            lag,
        ]);
    }
    text.push_str(&offsets.to_string());
    if !d.members.is_empty() {
        let mut members = output::table(&["member", "client", "partitions"], &[]);
        for (member, client, assignment) in &d.members {
            let partitions = assignor::decode_assignment(assignment)?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            members.add_row(vec![member.clone(), client.clone(), partitions]);
        }
        text.push('\n');
        text.push_str(&members.to_string());
    }
    output::print(text)
}
