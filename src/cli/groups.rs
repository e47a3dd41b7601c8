//! `runnel groups`: lists consumer groups and shows a group's committed offsets, the end offset
//! (high watermark) of each of those partitions and the lag between them, plus its members.
//!
//! Groups are coordinated inside the process that has the data directory open, so a group
//! seen from this command has no live members unless this process runs one; its committed
//! offsets are what it shows. With `--bootstrap`, the broker's coordinator answers (ListGroups,
//! DescribeGroups, OffsetFetch, ListOffsets for the end offsets), live members included.

use super::output;
use anyhow::{Result, bail};
use clap::Subcommand;
use runnel_broker::RemoteLog;
use runnel_log::{Log, TopicPartition, assignor};

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
    let groups = log
        .groups()
        .list_groups()
        .into_iter()
        .map(|(group, state)| {
            let members = log.groups().describe_group(&group).members.len();
            (group, state.to_string(), members)
        });
    print_list(groups)
}

fn print_list(groups: impl Iterator<Item = (String, String, usize)>) -> Result<()> {
    let mut t = output::table(&["group", "state", "members"], &[2]);
    for (group, state, members) in groups {
        t.add_row(vec![group, state, members.to_string()]);
    }
    output::print(t)
}

/// `runnel --bootstrap ... groups ...`: the same commands through the group coordinator.
pub async fn run_remote(remote: &RemoteLog, cmd: GroupsCommand) -> Result<()> {
    match cmd {
        GroupsCommand::List => {
            let mut groups = Vec::new();
            for (group, state) in remote.groups().await? {
                let members = remote.describe_group(&group).await?.members.len();
                groups.push((group, state, members));
            }
            print_list(groups.into_iter())
        }
        GroupsCommand::Describe { group } => {
            let d = remote.describe_group(&group).await?;
            let tps: Vec<TopicPartition> = d.offsets.iter().map(|(tp, _)| tp.clone()).collect();
            let ends = remote.list_offsets(&tps, -1).await?;
            let offsets = d
                .offsets
                .iter()
                .zip(ends)
                .map(|((tp, committed), end)| (tp.clone(), *committed, Some(end)))
                .collect();
            let members = d
                .members
                .into_iter()
                .map(|(member, client, _host, assignment)| (member, client, assignment.to_vec()))
                .collect();
            print_group(&group, &d.state, offsets, members)
        }
    }
}

fn describe(log: &Log, group: &str) -> Result<()> {
    let d = log.groups().describe_group(group);
    let offsets = d
        .offsets
        .iter()
        .map(|(tp, committed)| {
            let end = log.partition(tp).ok().map(|p| p.high_watermark());
            (tp.clone(), committed.offset, end)
        })
        .collect();
    let members = d
        .members
        .iter()
        .map(|(m, c, a)| (m.clone(), c.clone(), a.to_vec()))
        .collect();
    print_group(group, &d.state.to_string(), offsets, members)
}

/// A group's committed offsets (topic partition, committed, end offset if the partition
/// exists) and members (member id, client id, assignment), as `groups describe` prints them.
fn print_group(
    group: &str,
    state: &str,
    offsets: Vec<(TopicPartition, u64, Option<u64>)>,
    members: Vec<(String, String, Vec<u8>)>,
) -> Result<()> {
    if offsets.is_empty() && members.is_empty() {
        bail!(
            "consumer group {group:?} does not exist: it has no members and no committed offsets; `runnel groups list` shows the groups"
        );
    }
    let mut text = format!(
        "group {group}: {state}, {}\n",
        output::count(members.len() as u64, "member")
    );
    let mut table = output::table(
        &[
            "topic",
            "partition",
            "committed offset",
            "end offset",
            "lag",
        ],
        &[1, 2, 3, 4],
    );
    for (tp, committed, end) in &offsets {
        let (end, lag) = match end {
            Some(end) => (end.to_string(), end.saturating_sub(*committed).to_string()),
            None => ("(deleted)".to_string(), "-".to_string()),
        };
        table.add_row(vec![
            tp.topic.clone(),
            tp.partition.to_string(),
            committed.to_string(),
            end,
            lag,
        ]);
    }
    text.push_str(&table.to_string());
    if !members.is_empty() {
        let mut t = output::table(&["member", "client", "partitions"], &[]);
        for (member, client, assignment) in &members {
            let partitions = assignor::decode_assignment(assignment)?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            t.add_row(vec![member.clone(), client.clone(), partitions]);
        }
        text.push('\n');
        text.push_str(&t.to_string());
    }
    output::print(text)
}
