//! Tracks the delivery futures of records sent through a [`Producer`] without awaiting them one
//! by one: they wait in a bounded queue, the oldest is awaited only when the queue is full, and
//! [`Deliveries::finish`] closes the producer and settles the rest. Every failed delivery is
//! counted and the first error kept, so no lost record goes unreported.

use runnel_log::{DeliveryFuture, LogError, Producer};
use std::collections::VecDeque;

/// Deliveries pending beyond this many are awaited before more are queued.
const MAX_PENDING: usize = 100_000;

#[derive(Debug, Default)]
pub struct Deliveries {
    pending: VecDeque<DeliveryFuture>,
    stored: u64,
    failed: u64,
    first_error: Option<LogError>,
}

/// What happened to the records once the producer was closed.
#[derive(Debug)]
pub struct Outcome {
    pub stored: u64,
    pub failed: u64,
    pub first_error: Option<LogError>,
}

impl Outcome {
    /// An error naming how many records were lost and why, if any were.
    pub fn into_result(self) -> anyhow::Result<u64> {
        match self.first_error {
            None => Ok(self.stored),
            Some(e) => Err(anyhow::anyhow!(
                "could not store {} of {}: {e}",
                self.failed,
                super::output::count(self.failed + self.stored, "record")
            )),
        }
    }
}

impl Deliveries {
    /// Queues a delivery, first awaiting the oldest ones while too many are pending.
    pub async fn push(&mut self, delivery: DeliveryFuture) {
        while self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.settle(oldest).await;
            }
        }
        self.pending.push_back(delivery);
    }

    async fn settle(&mut self, delivery: DeliveryFuture) {
        match delivery.wait().await {
            Ok(_) => self.stored += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Closes the producer (sending everything queued) and settles every pending delivery.
    pub async fn finish(mut self, producer: &Producer) -> Outcome {
        let closed = producer.close().await;
        while let Some(d) = self.pending.pop_front() {
            self.settle(d).await;
        }
        if let (Err(e), None) = (closed, &self.first_error) {
            self.first_error = Some(e);
        }
        Outcome {
            stored: self.stored,
            failed: self.failed,
            first_error: self.first_error,
        }
    }
}
