//! Food delivery: order status events joined with a restaurants table, and the time from
//! `placed` to `delivered` per order through a windowed stream–stream join. Generates its own
//! orders on a temporary embedded log, runs the topology to the end of the input, and prints
//! the average delivery time per restaurant.
//!
//! `cargo run --release --example food_delivery [ORDERS]`

use comfy_table::Table;
use runnel::demo::{Demo, Lcg};
use runnel::engine::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderEvent {
    order_id: String,
    restaurant_id: String,
    status: String,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Restaurant {
    name: String,
    cuisine: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delivery {
    order_id: String,
    restaurant: String,
    cuisine: String,
    minutes: f64,
}

const RESTAURANTS: [(&str, &str); 6] = [
    ("Luigi's", "pizza"),
    ("Sakura", "sushi"),
    ("Taco Loco", "mexican"),
    ("Curry House", "indian"),
    ("Green Bowl", "salads"),
    ("Burger Barn", "burgers"),
];

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let restaurants = b.table(
        "restaurants",
        Consumed::with(StringSerde, JsonSerde::<Restaurant>::new()),
    );
    let events = b.stream(
        "order-events",
        Consumed::with(StringSerde, JsonSerde::<OrderEvent>::new())
            .with_timestamp(|_, e, _| e.ts)
            .with_out_of_orderness(Duration::from_secs(30)),
    );
    let placed = events.filter(|_, e| e.status == "placed");
    let delivered = events.filter(|_, e| e.status == "delivered");
    placed
        .join_stream(
            &delivered,
            |p, d| {
                (
                    p.restaurant_id.clone(),
                    p.order_id.clone(),
                    (d.ts - p.ts) as f64 / 60_000.0,
                )
            },
            JoinWindows::of(Duration::from_secs(3 * 3600)).before(Duration::ZERO),
        )
        .map(|_, (restaurant, order, minutes)| (restaurant, (order, minutes)))
        .with_serdes(StringSerde, JsonSerde::<(String, f64)>::new())
        .join(&restaurants, |(order, minutes), r| Delivery {
            order_id: order.clone(),
            restaurant: r.name.clone(),
            cuisine: r.cuisine.clone(),
            minutes: *minutes,
        })
        .to(
            "delivery-times",
            Produced::with(StringSerde, JsonSerde::<Delivery>::new()),
        );
    b.build()
}

fn main() -> anyhow::Result<()> {
    let orders: u64 = std::env::args().nth(1).map_or(Ok(20_000), |a| a.parse())?;
    let demo = Demo::new()?;
    let restaurants = RESTAURANTS.iter().enumerate().map(|(i, (name, cuisine))| {
        let r = Restaurant {
            name: name.to_string(),
            cuisine: cuisine.to_string(),
        };
        (format!("r{i}"), 0, r)
    });
    demo.produce("restaurants", 3, restaurants)?;
    // Orders every 3 s; each goes placed → accepted → picked_up → delivered over 20-70 min,
    // slower for some restaurants; events of different orders interleave in time.
    let mut rng = Lcg::new(7);
    let base = 1_700_000_000_000i64;
    let mut events = Vec::new();
    for o in 0..orders {
        let r = rng.below(RESTAURANTS.len() as u64);
        let placed = base + o as i64 * 3_000;
        let total = (20 + rng.below(30) + r * 4) as i64 * 60_000;
        for (status, at) in [
            ("placed", 0),
            ("accepted", total / 8),
            ("picked_up", total / 2),
            ("delivered", total),
        ] {
            events.push(OrderEvent {
                order_id: format!("o{o}"),
                restaurant_id: format!("r{r}"),
                status: status.into(),
                ts: placed + at,
            });
        }
    }
    events.sort_by_key(|e| e.ts);
    demo.produce(
        "order-events",
        3,
        events.into_iter().map(|e| (e.order_id.clone(), e.ts, e)),
    )?;

    let summary = demo.run(topology(), "food-delivery")?;
    let deliveries: Vec<(String, Delivery)> = demo.read("delivery-times")?;
    let mut per: BTreeMap<String, (String, u64, f64, f64)> = BTreeMap::new();
    for (_, d) in &deliveries {
        let e = per
            .entry(d.restaurant.clone())
            .or_insert((d.cuisine.clone(), 0, 0.0, 0.0));
        e.1 += 1;
        e.2 += d.minutes;
        e.3 = e.3.max(d.minutes);
    }
    let mut t = Table::new();
    t.set_header([
        "restaurant",
        "cuisine",
        "orders delivered",
        "avg minutes",
        "max minutes",
    ]);
    for (name, (cuisine, n, sum, max)) in &per {
        t.add_row([
            name.clone(),
            cuisine.clone(),
            n.to_string(),
            format!("{:.1}", sum / *n as f64),
            format!("{max:.0}"),
        ]);
    }
    println!("{t}");
    println!(
        "{orders} orders ({} status events) -> {} deliveries timed and joined with {} restaurants ({} late events)",
        orders * 4,
        deliveries.len(),
        RESTAURANTS.len(),
        summary.metrics.late_records
    );
    Ok(())
}
