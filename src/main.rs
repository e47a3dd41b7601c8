//! The `runnel` command. Each subcommand lives in its own module under [`cli`]; this file only
//! parses the arguments, sets up logging (`RUST_LOG`, default `warn`, to stderr) and the tokio
//! runtime, and turns an error into one `error: ...` line and exit code 1.

mod cli;

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc, and survives a network peer's absurd array length without aborting (see the
/// module).
#[global_allocator]
static ALLOC: runnel_broker::alloc::LazyLargeAlloc = runnel_broker::alloc::LazyLargeAlloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(cli::run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
