//! The `runnel` command. Each subcommand lives in its own module under [`cli`]; this file only
//! parses the arguments, sets up logging (`RUST_LOG`, default `warn`, to stderr) and the tokio
//! runtime, and turns an error into one `error: ...` line and exit code 1.

mod cli;

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Survives a network peer's absurd array length without aborting (see the module).
#[global_allocator]
static ALLOC: runnel_broker::alloc::LazyLargeAlloc = runnel_broker::alloc::LazyLargeAlloc;

/// Keeps memory the process frees for its next allocations instead of handing it back to the
/// kernel at once: a stream job frees megabytes of read buffers and record runs every poll,
/// and glibc's defaults unmap them and fault fresh zeroed pages in for the next ones.
#[cfg(target_env = "gnu")]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets glibc's allocator parameters; called before any other thread
    // exists. 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(target_env = "gnu"))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
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
