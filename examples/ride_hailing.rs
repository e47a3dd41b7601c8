//! Ride-hailing: average and maximum speed per region in 10 s tumbling windows, from driver
//! location updates keyed by driver (so the grouping by region goes through a repartition
//! topic). Runs on a temporary embedded log with data it generates, then prints what it found.
//!
//! `cargo run --release --example ride_hailing [EVENTS]`

use comfy_table::Table;
use runnel::demo::Demo;
use runnel::rides::{self, RegionWindow};
use std::collections::BTreeMap;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args().nth(1).map_or(Ok(500_000), |a| a.parse())?;
    let demo = Demo::new()?;
    demo.rt.block_on(rides::produce_rides(
        &demo.client,
        "rides",
        4,
        events,
        |_| {},
    ))?;
    let started = Instant::now();
    let summary = demo.run(
        rides::speed_per_region("rides", "region-speeds"),
        "ride-hailing",
    )?;
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
        "{events} location updates -> {} region windows of 10 s in {:.2?} ({} tasks, {} late records)",
        windows.len(),
        elapsed,
        summary.tasks,
        summary.metrics.late_records
    );
    Ok(())
}
