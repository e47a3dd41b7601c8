//! The TCP server: accepts connections and answers each connection's requests in order.
//!
//! Contract:
//! - Requests on one connection are read, handled and answered one at a time, so pipelined
//!   requests are answered in the order they were sent (as Kafka does by muting a connection
//!   while its request is in flight). Different connections run concurrently.
//! - A frame that cannot be a Kafka request (bad size, truncated header, undecodable body)
//!   closes that connection with a logged reason; the broker and its other connections go on.
//! - An unknown API key or an unsupported version is answered, never dropped: see
//!   [`crate::api`].

use crate::api::parts::{Part, send_file};
use crate::api::{self, Outcome};
use crate::error::BrokerError;
use crate::frame::read_frame;
use crate::metrics::Metrics;
use runnel_log::Log;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Broker settings (`runnel broker` flags).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: String,
    /// Create a topic when a client asks for its metadata or produces to it (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with `num_partitions = -1`.
    pub default_partitions: u32,
    /// The address Metadata and FindCoordinator give clients (Kafka's `advertised.listeners`),
    /// when it is not the listen address: behind a proxy or NAT. An IP:PORT.
    pub advertised_listener: Option<SocketAddr>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            auto_create_topics: true,
            default_partitions: 1,
            advertised_listener: None,
        }
    }
}

/// A running broker's shared state.
pub struct Broker {
    pub(crate) log: Log,
    pub(crate) config: BrokerConfig,
    /// The address clients are told to connect to (Metadata, FindCoordinator).
    pub(crate) advertised: SocketAddr,
    /// The address listened on (loopback for a wildcard listen address).
    bound: SocketAddr,
    pub(crate) fetch_sessions: crate::api::fetch_session::FetchSessions,
    pub metrics: Arc<Metrics>,
    listener: parking_lot::Mutex<Option<TcpListener>>,
}

impl Broker {
    /// Binds the listen address. Port 0 picks a free port; [`Broker::local_addr`] tells which.
    pub async fn bind(log: Log, config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let mut bound = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        // Clients cannot connect to 0.0.0.0; advertise loopback for a wildcard listen address.
        if bound.ip().is_unspecified() {
            bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let advertised = config.advertised_listener.unwrap_or(bound);
        Ok(Arc::new(Self {
            log,
            config,
            advertised,
            bound,
            fetch_sessions: Default::default(),
            metrics: Arc::new(Metrics::default()),
            listener: parking_lot::Mutex::new(Some(listener)),
        }))
    }

    /// The address the broker listens on (with loopback for a wildcard address).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }

    /// Writes the producer-state snapshots of partitions that changed (blocking): call it
    /// after stopping the server and before closing the log, so that the next start reads no
    /// log to rebuild them. The log's background thread writes them periodically.
    pub fn save_producer_state(&self) {
        for name in self.log.topic_names() {
            if let Ok(t) = self.log.topic(&name) {
                for p in t.partitions() {
                    p.save_producer_state();
                }
            }
        }
    }

    /// Accepts connections until the task is dropped. Dropping (aborting) it also ends every
    /// connection it accepted, so the broker's handle on the log is released with it.
    pub async fn serve(self: Arc<Self>) -> Result<(), BrokerError> {
        let listener = self
            .listener
            .lock()
            .take()
            .ok_or_else(|| BrokerError::Malformed("serve called twice".into()))?;
        tracing::info!(listen = %self.bound, advertised = %self.advertised, "broker listening");
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                // Reaps finished connection tasks so the set does not grow.
                Some(_) = connections.join_next() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            connections.spawn(async move {
                broker
                    .metrics
                    .connections_open
                    .fetch_add(1, Ordering::Relaxed);
                broker
                    .metrics
                    .connections_total
                    .fetch_add(1, Ordering::Relaxed);
                if let Err(e) = broker.connection(stream).await {
                    broker
                        .metrics
                        .connections_malformed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "closing connection");
                }
                broker
                    .metrics
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Serves one connection. Returns an error only for a malformed frame or request (the
    /// caller logs it); a peer closing or resetting the connection ends it quietly.
    async fn connection(&self, stream: TcpStream) -> Result<(), BrokerError> {
        let (mut rd, wr) = stream.into_split();
        let mut wr = tokio::io::BufWriter::with_capacity(256 << 10, wr);
        loop {
            let frame = match read_frame(&mut rd).await {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(BrokerError::Malformed(e.to_string()));
                }
                Err(_) => return Ok(()),
            };
            self.metrics
                .bytes_in
                .fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
            let response = match api::handle(self, frame).await? {
                Outcome::Respond(parts) => parts,
                Outcome::NoResponse => continue,
            };
            self.metrics.bytes_out.fetch_add(
                response.iter().map(|p| p.len() as u64).sum::<u64>(),
                Ordering::Relaxed,
            );
            let write = async {
                for part in &response {
                    match part {
                        Part::Bytes(b) => wr.write_all(b).await?,
                        Part::File(range) => {
                            // What was gathered goes first, then the records from the file.
                            wr.flush().await?;
                            send_file(wr.get_ref().as_ref(), range).await?;
                        }
                    }
                }
                wr.flush().await
            };
            if let Err(e) = write.await {
                // A peer gone is the usual cause; a segment shorter than its range is not.
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    tracing::warn!(error = %e, "closing connection");
                }
                return Ok(());
            }
        }
    }
}
