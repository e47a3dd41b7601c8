//! E-commerce: sales per product in 1-minute hopping windows (advancing every 10 s, computed
//! from 10 s panes), and the top products. Generates purchases keyed by customer on a temporary
//! embedded log (so the grouping by product repartitions), runs to the end of the input and
//! prints the best-selling products and the busiest minute.
//!
//! `cargo run --release --example ecommerce [PURCHASES]`

use comfy_table::Table;
use runnel::demo::{Demo, Lcg};
use runnel::engine::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Purchase {
    customer: String,
    product: String,
    quantity: u32,
    price: f64,
    ts: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Sales {
    orders: u64,
    units: u64,
    revenue: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProductWindow {
    product: String,
    window_start: i64,
    window_end: i64,
    orders: u64,
    units: u64,
    revenue: f64,
}

const PRODUCTS: [(&str, f64); 8] = [
    ("headphones", 59.0),
    ("keyboard", 89.0),
    ("mouse", 25.0),
    ("monitor", 229.0),
    ("webcam", 49.0),
    ("laptop-stand", 35.0),
    ("usb-hub", 19.0),
    ("microphone", 99.0),
];

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream(
        "purchases",
        Consumed::with(StringSerde, JsonSerde::<Purchase>::new())
            .with_timestamp(|_, p, _| p.ts)
            .with_out_of_orderness(Duration::from_secs(5)),
    )
    .group_by(
        |_, p| p.product.clone(),
        Grouped::with(StringSerde, JsonSerde::<Purchase>::new()),
    )
    .windowed_by(TimeWindows::of(Duration::from_secs(60)).advance_by(Duration::from_secs(10)))
    .aggregate(
        Sales::default,
        |_, p, s| Sales {
            orders: s.orders + 1,
            units: s.units + p.quantity as u64,
            revenue: s.revenue + p.price * p.quantity as f64,
        },
        |_, a, b| Sales {
            orders: a.orders + b.orders,
            units: a.units + b.units,
            revenue: a.revenue + b.revenue,
        },
        JsonSerde::<Sales>::new(),
        "sales-per-product-1m",
    )
    .to_stream()
    .map(|w, s| {
        let s = s.unwrap_or_default();
        let out = ProductWindow {
            product: w.key.clone(),
            window_start: w.window.start,
            window_end: w.window.end,
            orders: s.orders,
            units: s.units,
            revenue: s.revenue,
        };
        (w.key, out)
    })
    .to(
        "product-sales",
        Produced::with(StringSerde, JsonSerde::<ProductWindow>::new()),
    );
    b.build()
}

fn main() -> anyhow::Result<()> {
    let purchases: u64 = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let demo = Demo::new()?;
    let mut rng = Lcg::new(11);
    let base = 1_700_000_000_000i64;
    let events = (0..purchases).map(|i| {
        // Cheaper products sell more often: pick the lower of two draws.
        let n = PRODUCTS.len() as u64;
        let product = rng.below(n).min(rng.below(n)) as usize;
        let p = Purchase {
            customer: format!("c{}", rng.below(5_000)),
            product: PRODUCTS[product].0.into(),
            quantity: 1 + rng.below(3) as u32,
            price: PRODUCTS[product].1,
            ts: base + i as i64 * 20 + rng.below(2_000) as i64,
        };
        (p.customer.clone(), p.ts, p)
    });
    demo.produce("purchases", 4, events)?;

    demo.run(topology(), "ecommerce")?;
    let windows: Vec<(String, ProductWindow)> = demo.read("product-sales")?;
    // Windows advance every 10 s, so each purchase is in 6 of them: totals use the windows
    // starting on whole minutes, which tile the time line exactly once.
    let mut totals: BTreeMap<String, Sales> = BTreeMap::new();
    let mut busiest: Option<&ProductWindow> = None;
    for (_, w) in &windows {
        if w.window_start % 60_000 == 0 {
            let t = totals.entry(w.product.clone()).or_default();
            t.orders += w.orders;
            t.units += w.units;
            t.revenue += w.revenue;
        }
        if busiest.is_none_or(|b| w.revenue > b.revenue) {
            busiest = Some(w);
        }
    }
    let mut ranked: Vec<_> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.revenue.total_cmp(&a.1.revenue));
    let mut t = Table::new();
    t.set_header(["rank", "product", "orders", "units", "revenue"]);
    for (i, (product, s)) in ranked.iter().enumerate() {
        t.add_row([
            (i + 1).to_string(),
            product.clone(),
            s.orders.to_string(),
            s.units.to_string(),
            format!("{:.2}", s.revenue),
        ]);
    }
    println!("{t}");
    let counted: u64 = ranked.iter().map(|(_, s)| s.orders).sum();
    if let Some(b) = busiest {
        println!(
            "busiest 1-minute window: {} sold {:.2} from {} to {}",
            b.product, b.revenue, b.window_start, b.window_end
        );
    }
    println!(
        "{purchases} purchases -> {} hopping windows; the whole-minute windows count {counted} purchases",
        windows.len()
    );
    Ok(())
}
