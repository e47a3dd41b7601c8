//! The TCP server: accepts connections on its listeners and answers each connection's requests
//! in order.
//!
//! Contract:
//! - Requests on one connection are read, handled and answered one at a time, so pipelined
//!   requests are answered in the order they were sent (as Kafka does by muting a connection
//!   while its request is in flight). Different connections run concurrently.
//! - A frame that cannot be a Kafka request (bad size, truncated header, undecodable body)
//!   closes that connection with a logged reason; the broker and its other connections go on.
//! - An unknown API key or an unsupported version is answered, never dropped: see
//!   [`crate::api`].
//! - Each listener has a security protocol (Kafka's `listeners`): `SSL` and `SASL_SSL` ones
//!   speak TLS (a failed handshake, plaintext included, closes that connection only); on
//!   `SASL_*` ones nothing but ApiVersions, SaslHandshake and SaslAuthenticate is served until
//!   the client authenticated. Metadata and FindCoordinator give each client the advertised
//!   address of the listener it came in on.

use crate::api::parts::{Part, send_file};
use crate::api::sasl::Session;
use crate::api::{self, Outcome};
use crate::error::BrokerError;
use crate::frame::read_frame;
use crate::metrics::Metrics;
use crate::security::acl::SecurityFile;
use crate::security::tls::{self, TlsFiles};
use crate::security::{Listener, SecurityProtocol};
use runnel_log::{FileRange, Log};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take over its TLS handshake before its connection is closed.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Broker settings (`runnel broker` flags).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen, with which security protocol (Kafka's `listeners`); at least one, at
    /// most one per protocol.
    pub listeners: Vec<Listener>,
    /// Create a topic when a client asks for its metadata or produces to it (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with `num_partitions = -1`.
    pub default_partitions: u32,
    /// The address Metadata and FindCoordinator give clients of the listener of the same
    /// protocol (Kafka's `advertised.listeners`), when it is not the listen address: behind a
    /// proxy or NAT. HOST:PORT.
    pub advertised_listeners: Vec<Listener>,
    /// Certificate and key of the `SSL` and `SASL_SSL` listeners.
    pub tls: Option<TlsFiles>,
    /// Users (for SASL) and ACLs; see [`crate::security::acl`].
    pub security_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listeners: vec![Listener {
                protocol: SecurityProtocol::Plaintext,
                addr: "127.0.0.1:9092".into(),
            }],
            auto_create_topics: true,
            default_partitions: 1,
            advertised_listeners: Vec::new(),
            tls: None,
            security_file: None,
        }
    }
}

/// One bound listener.
pub(crate) struct ListenerInfo {
    pub protocol: SecurityProtocol,
    /// The address listened on (loopback for a wildcard listen address).
    pub bound: SocketAddr,
    /// What clients of this listener are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// A running broker's shared state.
pub struct Broker {
    pub(crate) log: Log,
    pub(crate) config: BrokerConfig,
    listeners: Vec<Arc<ListenerInfo>>,
    pub(crate) fetch_sessions: crate::api::fetch_session::FetchSessions,
    pub metrics: Arc<Metrics>,
    /// Users and ACLs, when a security file is configured.
    pub(crate) security: Option<Arc<SecurityFile>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    sockets: parking_lot::Mutex<Option<Vec<TcpListener>>>,
}

impl Broker {
    /// Binds every listener. Port 0 picks a free port; [`Broker::local_addr`] and
    /// [`Broker::listener_addrs`] tell which.
    ///
    /// # Errors
    ///
    /// - `BrokerError::Config` with no listener, two listeners of one protocol, a TLS listener
    ///   without certificate and key, a SASL listener without a security file, or an advertised
    ///   listener that is not HOST:PORT;
    /// - `BrokerError::Security` if the security file does not load;
    /// - `BrokerError::Tls` if the certificate, key or client CA cannot be used;
    /// - `BrokerError::Bind` if a listener's address cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is served before it returns; dropping it closes the sockets bound so far.
    pub async fn bind(log: Log, config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let invalid = |m: String| BrokerError::Config(m);
        if config.listeners.is_empty() {
            return Err(invalid("no listener: give at least one --listen".into()));
        }
        let security = match &config.security_file {
            Some(path) => Some(Arc::new(SecurityFile::load(path)?)),
            None => None,
        };
        let mut tls_acceptor = None;
        let mut sockets = Vec::new();
        let mut listeners: Vec<Arc<ListenerInfo>> = Vec::new();
        for l in &config.listeners {
            if listeners.iter().any(|o| o.protocol == l.protocol) {
                return Err(invalid(format!(
                    "two {} listeners: give one listener per protocol",
                    l.protocol.name()
                )));
            }
            if l.protocol.uses_tls() && tls_acceptor.is_none() {
                let files = config.tls.as_ref().ok_or_else(|| {
                    invalid(format!(
                        "listener {l} needs a certificate and key: give --ssl-cert and --ssl-key"
                    ))
                })?;
                tls_acceptor = Some(tokio_rustls::TlsAcceptor::from(tls::server_config(files)?));
            }
            if l.protocol.uses_sasl() && security.is_none() {
                return Err(invalid(format!(
                    "listener {l} authenticates users: give --security-file with the users (`runnel users add`)"
                )));
            }
            let bind_error = |source| BrokerError::Bind {
                addr: l.addr.clone(),
                source,
            };
            let socket = TcpListener::bind(&l.addr).await.map_err(bind_error)?;
            let mut bound = socket.local_addr().map_err(bind_error)?;
            // Clients cannot connect to 0.0.0.0; advertise loopback for a wildcard listen address.
            if bound.ip().is_unspecified() {
                bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let (advertised_host, advertised_port) = match config
                .advertised_listeners
                .iter()
                .find(|a| a.protocol == l.protocol)
            {
                Some(a) => split_host_port(&a.addr)
                    .ok_or_else(|| invalid(format!("advertised listener {a} is not HOST:PORT")))?,
                None => (bound.ip().to_string(), i32::from(bound.port())),
            };
            sockets.push(socket);
            listeners.push(Arc::new(ListenerInfo {
                protocol: l.protocol,
                bound,
                advertised_host,
                advertised_port,
            }));
        }
        Ok(Arc::new(Self {
            log,
            config,
            listeners,
            fetch_sessions: Default::default(),
            metrics: Arc::new(Metrics::default()),
            security,
            tls: tls_acceptor,
            sockets: parking_lot::Mutex::new(Some(sockets)),
        }))
    }

    /// The address of the first listener (with loopback for a wildcard address).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].bound
    }

    /// Every listener's protocol and address, in the order they were configured.
    pub fn listener_addrs(&self) -> Vec<(SecurityProtocol, SocketAddr)> {
        self.listeners
            .iter()
            .map(|l| (l.protocol, l.bound))
            .collect()
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

    /// Accepts connections on every listener until the task is dropped. Dropping (aborting) it
    /// also ends every connection it accepted, so the broker's handle on the log is released
    /// with it.
    ///
    /// # Errors
    ///
    /// `BrokerError::Malformed` if it is called a second time (the listeners were taken by the
    /// first call), or if a listener task panicked. A failed connection or `accept` is logged and
    /// does not end it.
    ///
    /// # Cancel safety
    ///
    /// Dropping it is the way to stop the broker: every listener and connection ends, and a
    /// request in flight is cut off, perhaps applied without its answer (the client sees a
    /// closed connection and retries; an idempotent producer's batch is not stored twice). The
    /// listeners go with it: it cannot be called again on this broker.
    pub async fn serve(self: Arc<Self>) -> Result<(), BrokerError> {
        let sockets = self
            .sockets
            .lock()
            .take()
            .ok_or_else(|| BrokerError::Malformed("serve called twice".into()))?;
        let mut accepting = tokio::task::JoinSet::new();
        for (socket, info) in sockets.into_iter().zip(self.listeners.clone()) {
            tracing::info!(
                listener = %format!("{}://{}", info.protocol.name(), info.bound),
                advertised = %format!("{}:{}", info.advertised_host, info.advertised_port),
                "broker listening"
            );
            accepting.spawn(self.clone().accept(socket, info));
        }
        while let Some(done) = accepting.join_next().await {
            done.map_err(|e| BrokerError::Malformed(format!("listener task: {e}")))?;
        }
        Ok(())
    }

    async fn accept(self: Arc<Self>, socket: TcpListener, info: Arc<ListenerInfo>) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = socket.accept() => a,
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
            let info = info.clone();
            connections.spawn(async move {
                let m = &broker.metrics;
                m.connections_open.fetch_add(1, Ordering::Relaxed);
                m.connections_total.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = broker.open(stream, info).await {
                    m.connections_malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "closing connection");
                }
                m.connections_open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Runs the TLS handshake where the listener asks for it, then serves the connection.
    async fn open(&self, stream: TcpStream, info: Arc<ListenerInfo>) -> Result<(), BrokerError> {
        let mut session = Session::new(info.clone());
        if !info.protocol.uses_tls() {
            let (rd, wr) = stream.into_split();
            let wr = Wire::Plain(BufWriter::with_capacity(256 << 10, wr));
            return self.connection(rd, wr, session).await;
        }
        let acceptor = self
            .tls
            .as_ref()
            .expect("bind made an acceptor for TLS listeners");
        let tls = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            acceptor.accept(tls::buffered(stream)),
        )
        .await
        .map_err(|_| BrokerError::Tls("the client did not finish its handshake".into()))?
        .map_err(|e| BrokerError::Tls(format!("handshake failed: {e}")))?;
        if let Some(cn) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls::subject_common_name(c))
        {
            session.principal = format!("User:CN={cn}");
        }
        let (rd, wr) = tokio::io::split(tls);
        let wr = Wire::Tls {
            w: BufWriter::with_capacity(256 << 10, wr),
            scratch: Vec::new(),
        };
        self.connection(rd, wr, session).await
    }

    /// Serves one connection. Returns an error only for a malformed frame or request (the
    /// caller logs it); a peer closing or resetting the connection ends it quietly.
    async fn connection(
        &self,
        mut rd: impl AsyncRead + Unpin,
        mut wr: Wire,
        mut session: Session,
    ) -> Result<(), BrokerError> {
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
            let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
            tracing::debug!(?api_key, bytes = frame.len(), "request read");
            let (response, close) = match api::handle(self, &mut session, frame).await? {
                Outcome::Respond(parts) => (parts, false),
                Outcome::RespondAndClose(parts) => (parts, true),
                Outcome::NoResponse => continue,
            };
            self.metrics.bytes_out.fetch_add(
                response.iter().map(|p| p.len() as u64).sum::<u64>(),
                Ordering::Relaxed,
            );
            tracing::debug!(?api_key, "request handled");
            if let Err(e) = wr.send(&response).await {
                // A peer gone is the usual cause; a segment shorter than its range is not.
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    tracing::warn!(error = %e, "closing connection");
                }
                return Ok(());
            }
            tracing::debug!(?api_key, "answer flushed");
            if close {
                return Ok(());
            }
        }
    }
}

/// The writing half of a connection: plain TCP sends file ranges with `sendfile`; TLS must
/// encrypt them, so they are read into memory first.
enum Wire {
    Plain(BufWriter<OwnedWriteHalf>),
    Tls {
        w: BufWriter<tokio::io::WriteHalf<TlsStream>>,
        /// File ranges are read into this buffer, reused: a fresh one per range cost an
        /// allocation and its page faults per megabyte sent.
        scratch: Vec<u8>,
    },
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::io::BufReader<TcpStream>>;

impl Wire {
    async fn send(&mut self, response: &[Part]) -> std::io::Result<()> {
        for part in response {
            match (part, &mut *self) {
                (Part::Bytes(b), Wire::Plain(w)) => w.write_all(b).await?,
                (Part::Bytes(b), Wire::Tls { w, .. }) => w.write_all(b).await?,
                (Part::File(range), Wire::Plain(w)) => {
                    // What was gathered goes first, then the records from the file.
                    w.flush().await?;
                    send_file(w.get_ref().as_ref(), range).await?;
                }
                (Part::File(range), Wire::Tls { w, scratch }) => {
                    send_file_encrypted(w, range, scratch).await?
                }
            }
        }
        match self {
            Wire::Plain(w) => w.flush().await,
            Wire::Tls { w, .. } => w.flush().await,
        }
    }
}

/// The most of a file range read into memory at once to be encrypted: bounds the buffer a TLS
/// connection keeps.
const TLS_FILE_CHUNK: u64 = 1 << 20;

/// Writes the bytes of `range` to a TLS stream: read from the file (page cache, as `sendfile`
/// would) in chunks into `scratch`, which is reused.
async fn send_file_encrypted(
    w: &mut BufWriter<tokio::io::WriteHalf<TlsStream>>,
    range: &FileRange,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (mut at, end) = (range.position, range.position + range.len);
    while at < end {
        let n = (end - at).min(TLS_FILE_CHUNK) as usize;
        if scratch.len() < n {
            scratch.resize(n, 0);
        }
        range.file.read_exact_at(&mut scratch[..n], at)?;
        w.write_all(&scratch[..n]).await?;
        at += n as u64;
    }
    Ok(())
}

/// `HOST:PORT` (IPv6 hosts in brackets) split into its parts.
fn split_host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse::<u16>().ok()?.into()))
}
