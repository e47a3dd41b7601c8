//! The built-in Nexmark input: the benchmark's `person`, `auction` and `bid` streams from the
//! `nexmark` crate's deterministic generator, as JSON rows (columns in snake case, times in
//! epoch milliseconds).
//!
//! The generator is seeded with a fixed base time, so the same `events` count always gives the
//! same records: outputs can be compared run to run and against the batch oracle.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use nexmark::event::Event;
use std::sync::Arc;

/// 2024-01-01T00:00:00Z: the generator's base time (its default is "now").
pub const BASE_TIME_MS: u64 = 1_704_067_200_000;

/// The columns of a Nexmark stream (`person`, `auction` or `bid`).
pub fn schema(stream: &str) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let cols: Vec<(&str, DataType)> = match stream {
        "person" => vec![
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("email_address", DataType::Utf8),
            ("credit_card", DataType::Utf8),
            ("city", DataType::Utf8),
            ("state", DataType::Utf8),
            ("date_time", ts()),
            ("extra", DataType::Utf8),
        ],
        "auction" => vec![
            ("id", DataType::Int64),
            ("item_name", DataType::Utf8),
            ("description", DataType::Utf8),
            ("initial_bid", DataType::Int64),
            ("reserve", DataType::Int64),
            ("date_time", ts()),
            ("expires", ts()),
            ("seller", DataType::Int64),
            ("category", DataType::Int64),
            ("extra", DataType::Utf8),
        ],
        _ => vec![
            ("auction", DataType::Int64),
            ("bidder", DataType::Int64),
            ("price", DataType::Int64),
            ("channel", DataType::Utf8),
            ("url", DataType::Utf8),
            ("date_time", ts()),
            ("extra", DataType::Utf8),
        ],
    };
    Arc::new(Schema::new(
        cols.into_iter()
            .map(|(n, t)| Field::new(n, t, false))
            .collect::<Vec<_>>(),
    ))
}

/// The first `events` Nexmark events (all kinds), in order.
pub fn events(events: u64) -> impl Iterator<Item = Event> {
    let config = nexmark::config::NexmarkConfig {
        base_time: BASE_TIME_MS,
        ..Default::default()
    };
    nexmark::EventGenerator::new(config).take(events as usize)
}

/// The stream an event belongs to, its event time and its id (persons and auctions: the
/// record key, so either can be read as a table); the JSON row is appended to `out`.
pub fn write_json(event: &Event, out: &mut Vec<u8>) -> (&'static str, i64, Option<usize>) {
    // Borrowed rows, serialized straight into `out` (a JSON value per event cost a third of
    // the generator's time in allocations).
    #[derive(serde::Serialize)]
    struct PersonRow<'a> {
        id: usize,
        name: &'a str,
        email_address: &'a str,
        credit_card: &'a str,
        city: &'a str,
        state: &'a str,
        date_time: u64,
        extra: &'a str,
    }
    #[derive(serde::Serialize)]
    struct AuctionRow<'a> {
        id: usize,
        item_name: &'a str,
        description: &'a str,
        initial_bid: usize,
        reserve: usize,
        date_time: u64,
        expires: u64,
        seller: usize,
        category: usize,
        extra: &'a str,
    }
    #[derive(serde::Serialize)]
    struct BidRow<'a> {
        auction: usize,
        bidder: usize,
        price: usize,
        channel: &'a str,
        url: &'a str,
        date_time: u64,
        extra: &'a str,
    }
    let written = match event {
        Event::Person(p) => serde_json::to_writer(
            &mut *out,
            &PersonRow {
                id: p.id,
                name: &p.name,
                email_address: &p.email_address,
                credit_card: &p.credit_card,
                city: &p.city,
                state: &p.state,
                date_time: p.date_time,
                extra: &p.extra,
            },
        ),
        Event::Auction(a) => serde_json::to_writer(
            &mut *out,
            &AuctionRow {
                id: a.id,
                item_name: &a.item_name,
                description: &a.description,
                initial_bid: a.initial_bid,
                reserve: a.reserve,
                date_time: a.date_time,
                expires: a.expires,
                seller: a.seller,
                category: a.category,
                extra: &a.extra,
            },
        ),
        Event::Bid(b) => serde_json::to_writer(
            &mut *out,
            &BidRow {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                channel: &b.channel,
                url: &b.url,
                date_time: b.date_time,
                extra: &b.extra,
            },
        ),
    };
    written.expect("JSON of a generated event");
    let stream = match event {
        Event::Person(_) => "person",
        Event::Auction(_) => "auction",
        Event::Bid(_) => "bid",
    };
    let id = match event {
        Event::Person(p) => Some(p.id),
        Event::Auction(a) => Some(a.id),
        Event::Bid(_) => None,
    };
    (stream, event.timestamp() as i64, id)
}
