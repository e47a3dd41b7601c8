//! `runnel users`: the users of a broker's security file, with salted SCRAM credentials
//! (SCRAM-SHA-256 and SCRAM-SHA-512, 4096 iterations, as Kafka's `kafka-configs --add-config
//! 'SCRAM-SHA-512=[password=...]'`). The broker serves SASL PLAIN from the same credentials, so
//! no password is stored in clear. The broker reads the file when it starts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use runnel_broker::security::acl;
use runnel_broker::security::scram::Mechanism;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user, or set a user's password (read from stdin when --password is not given).
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The user name (its principal is `User:NAME` in ACLs).
    name: String,
    /// The security file (created if missing).
    #[arg(long, value_name = "FILE", env = "RUNNEL_SECURITY_FILE")]
    security_file: PathBuf,
    /// The password; without it, the first line of stdin (keeps it out of shell history).
    #[arg(long, env = "RUNNEL_USER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

pub fn run(cmd: UsersCommand) -> Result<()> {
    match cmd {
        UsersCommand::Add(args) => {
            let password = match args.password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                bail!("the password is empty: give --password or a line on stdin");
            }
            acl::add_user(
                &args.security_file,
                &args.name,
                &password,
                Mechanism::DEFAULT_ITERATIONS,
            )?;
            println!(
                "user {} added to {} (SCRAM-SHA-256, SCRAM-SHA-512; PLAIN is checked against them)",
                args.name,
                args.security_file.display()
            );
            Ok(())
        }
    }
}
