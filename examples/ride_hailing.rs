//! Ride-hailing: average and maximum speed per region in 10 s tumbling windows, from driver
//! location updates keyed by driver (so the grouping by region goes through a repartition
//! topic). Runs on a temporary embedded log with data it generates, then prints what it found.
//!
//! `cargo run --release --example ride_hailing [EVENTS]`
//!
//! Over a broker (`runnel broker`, or any Kafka cluster), every process started with the same
//! `--bootstrap` is an instance of the application `ride-hailing`: they share its tasks, and
//! one that dies has its tasks taken over by the others. The first that finds no `rides`
//! topic fills it; the others use it as it is.
//!
//! `cargo run --release --example ride_hailing -- --bootstrap 127.0.0.1:9092 [--exactly-once]`

use clap::Parser;
use comfy_table::Table;
use runnel::demo::Demo;
use runnel::rides::{self, RegionWindow};
use runnel_engine::{ProcessingGuarantee, StreamsConfig};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Location updates generated into `rides` when it is missing.
    #[arg(default_value_t = 500_000)]
    events: u64,
    /// A broker to run on (this process then is one instance of the application).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Kafka Streams' exactly_once_v2: each window written once, whatever crashes.
    #[arg(long)]
    exactly_once: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args.events;
    let demo = Demo::connect(args.bootstrap.as_deref())?;
    let found = demo.rt.block_on(demo.client.partition_count("rides"))?;
    if found.is_none() {
        demo.rt.block_on(rides::produce_rides(
            &demo.client,
            "rides",
            4,
            events,
            |_| {},
        ))?;
    }
    let input = match found {
        None => format!("{events} location updates"),
        Some(_) => "the location updates in `rides`".to_string(),
    };
    let mut config = StreamsConfig::new("ride-hailing");
    if args.exactly_once {
        config.processing_guarantee = ProcessingGuarantee::ExactlyOnce;
    }
    let started = Instant::now();
    let summary = demo.run_with(rides::speed_per_region("rides", "region-speeds"), config)?;
    let elapsed = started.elapsed();

    let windows: Vec<(String, RegionWindow)> = demo.read("region-speeds")?;
    let mut per_region: BTreeMap<String, (usize, u64, f64, f64)> = BTreeMap::new();
    for (_, w) in &windows {
        let e = per_region.entry(w.region.clone()).or_default();
        e.0 += 1;
        e.1 += w.count;
        e.2 += w.avg_speed * w.count as f64;
        e.3 = e.3.max(w.max_speed);
    }
    let mut table = Table::new();
    table.set_header(["region", "windows", "fast updates", "avg km/h", "max km/h"]);
    for (region, (n, count, sum, max)) in &per_region {
        table.add_row([
            region.clone(),
            n.to_string(),
            count.to_string(),
            format!("{:.1}", sum / *count as f64 * 3.6),
            format!("{:.1}", max * 3.6),
        ]);
    }
    println!("{table}");
    println!(
        "{input} -> {} region windows of 10 s in {:.2?} ({} tasks, {} late records)",
        windows.len(),
        elapsed,
        summary.tasks,
        summary.metrics.late_records
    );
    Ok(())
}
