//! Banking fraud: an alert when one card makes more than 5 payments within a minute (sliding
//! by 10 s), or a single payment above 5,000. Both kinds of alert go to the `alerts` topic.
//! Generates payments (with a few cards that burst or overspend) on a temporary embedded log,
//! runs to the end of the input, and prints the alerts against the cards it planted.
//!
//! `cargo run --release --example fraud_detection [PAYMENTS]`

use comfy_table::Table;
use runnel::demo::{Demo, Lcg};
use runnel::engine::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    card: String,
    amount: f64,
    merchant: String,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Alert {
    card: String,
    kind: String,
    detail: String,
    ts: i64,
}

const MAX_PAYMENTS_PER_MINUTE: i64 = 5;
const LARGE_AMOUNT: f64 = 5_000.0;

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let payments = b.stream(
        "payments",
        Consumed::with(StringSerde, JsonSerde::<Payment>::new())
            .with_timestamp(|_, p, _| p.ts)
            .with_out_of_orderness(Duration::from_secs(2)),
    );
    let large = payments
        .filter(|_, p| p.amount > LARGE_AMOUNT)
        .map_values(|p| Alert {
            card: p.card.clone(),
            kind: "large-amount".into(),
            detail: format!("{:.2} at {}", p.amount, p.merchant),
            ts: p.ts,
        });
    let bursts = payments
        .group_by_key(None)
        .windowed_by(TimeWindows::of(Duration::from_secs(60)).advance_by(Duration::from_secs(10)))
        .count("payments-per-card-1m")
        .to_stream()
        .filter(|_, n| n.is_some_and(|n| n > MAX_PAYMENTS_PER_MINUTE))
        .map(|w, n| {
            let alert = Alert {
                card: w.key.clone(),
                kind: "too-many-payments".into(),
                detail: format!(
                    "{} payments in [{}, {})",
                    n.unwrap_or(0),
                    w.window.start,
                    w.window.end
                ),
                ts: w.window.end,
            };
            (w.key, alert)
        });
    large.merge(&bursts).to(
        "alerts",
        Produced::with(StringSerde, JsonSerde::<Alert>::new()),
    );
    b.build()
}

fn main() -> anyhow::Result<()> {
    let payments: u64 = std::env::args().nth(1).map_or(Ok(200_000), |a| a.parse())?;
    let demo = Demo::new()?;
    let mut rng = Lcg::new(5);
    let base = 1_700_000_000_000i64;
    let (mut bursting, mut overspending) = (BTreeSet::new(), BTreeSet::new());
    let mut all = Vec::new();
    for i in 0..payments {
        let ts = base + i as i64 * 50;
        // 50,000 cards: a normal card pays about once an hour of this event time.
        all.push(Payment {
            card: format!("card-{:05}", rng.below(50_000)),
            amount: (1 + rng.below(20_000)) as f64 / 100.0,
            merchant: format!("m{}", rng.below(300)),
            ts,
        });
        if i % 20_000 == 7 {
            let card = format!("burst-{i}");
            for k in 0..8 {
                let merchant = "online".into();
                all.push(Payment {
                    card: card.clone(),
                    amount: 9.99,
                    merchant,
                    ts: ts + k * 4_000,
                });
            }
            bursting.insert(card);
        }
        if i % 25_000 == 11 {
            let card = format!("big-{i}");
            let merchant = "jeweller".into();
            all.push(Payment {
                card: card.clone(),
                amount: 7_500.0,
                merchant,
                ts,
            });
            overspending.insert(card);
        }
    }
    all.sort_by_key(|p| p.ts);
    demo.produce(
        "payments",
        4,
        all.into_iter().map(|p| (p.card.clone(), p.ts, p)),
    )?;

    demo.run(topology(), "fraud-detection")?;
    let alerts: Vec<(String, Alert)> = demo.read("alerts")?;
    let mut by_kind: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, a) in &alerts {
        by_kind
            .entry(a.kind.as_str())
            .or_default()
            .insert(a.card.as_str());
    }
    let mut t = Table::new();
    t.set_header(["alert", "alerts", "cards", "planted cards caught"]);
    let burst_cards = by_kind
        .get("too-many-payments")
        .cloned()
        .unwrap_or_default();
    let big_cards = by_kind.get("large-amount").cloned().unwrap_or_default();
    let count = |k: &str| alerts.iter().filter(|(_, a)| a.kind == k).count();
    t.add_row([
        "too-many-payments".to_string(),
        count("too-many-payments").to_string(),
        burst_cards.len().to_string(),
        format!(
            "{}/{}",
            bursting
                .iter()
                .filter(|c| burst_cards.contains(c.as_str()))
                .count(),
            bursting.len()
        ),
    ]);
    t.add_row([
        "large-amount".to_string(),
        count("large-amount").to_string(),
        big_cards.len().to_string(),
        format!(
            "{}/{}",
            overspending
                .iter()
                .filter(|c| big_cards.contains(c.as_str()))
                .count(),
            overspending.len()
        ),
    ]);
    println!("{t}");
    println!(
        "{payments} payments -> {} alerts in the alerts topic",
        alerts.len()
    );
    Ok(())
}
