//! One client connection to a broker, multiplexed by correlation id.
//!
//! Contract:
//! - Requests may be sent concurrently from several tasks; each gets its own response (matched
//!   by correlation id by a reader task). The broker answers one connection's requests in
//!   order, so a request that waits on the broker side (a long-poll Fetch, a JoinGroup) delays
//!   the others on the same connection: producers, fetchers and group members use their own.
//! - On connect, ApiVersions tells which versions the broker serves; [`Connection::version`]
//!   picks the highest both sides speak, or fails with [`BrokerError::Unsupported`].
//! - When the connection breaks, every waiting request fails with [`BrokerError::Io`] and the
//!   connection reports itself closed; callers open a new one.
//! - With a TLS protocol the connection is TLS (the server's name checked against its
//!   certificate); with a SASL protocol it authenticates (SaslHandshake v1, then
//!   SaslAuthenticate: PLAIN, or SCRAM with the server's signature checked) before it is
//!   handed out, and a refusal is [`BrokerError::Authentication`].

use crate::codes::api_name as api_label;
use crate::error::BrokerError;
use crate::frame::read_frame;
use crate::security::scram::ClientExchange;
use crate::security::{ClientSecurity, SaslMechanism};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

type Waiter = oneshot::Sender<Result<Bytes, String>>;

pub(crate) struct Connection {
    pub addr: String,
    next_correlation: AtomicI32,
    pending: Arc<Mutex<HashMap<i32, Waiter>>>,
    writer: tokio::sync::Mutex<Writer>,
    closed: Arc<AtomicBool>,
    /// api key → (min, max) served by the broker.
    versions: HashMap<i16, (i16, i16)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

const CLIENT_ID: &str = "runnel";

impl Connection {
    pub async fn connect(addr: &str, security: &ClientSecurity) -> Result<Arc<Self>, BrokerError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| BrokerError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr): (Reader, Writer) = match &security.tls {
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| BrokerError::Tls(format!("{host}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, crate::security::tls::buffered(stream))
                    .await
                    .map_err(|e| BrokerError::Tls(format!("handshake with {addr}: {e}")))?;
                let (rd, wr) = tokio::io::split(tls);
                (Box::new(rd), Box::new(wr))
            }
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
        };
        let mut rd = rd;
        let pending: Arc<Mutex<HashMap<i32, Waiter>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let pending = pending.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let reason = loop {
                    match read_frame(&mut rd).await {
                        Ok(Some(frame)) if frame.len() >= 4 => {
                            // The header is decoded with the body, which knows its version.
                            let id = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
                            if let Some(w) = pending.lock().remove(&id) {
                                let _ = w.send(Ok(frame));
                            }
                        }
                        Ok(Some(_)) => break "a response shorter than its header".to_string(),
                        Ok(None) => break "the broker closed the connection".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                closed.store(true, Ordering::Release);
                for (_, w) in pending.lock().drain() {
                    let _ = w.send(Err(reason.clone()));
                }
            })
        };
        let mut conn = Self {
            addr: addr.to_string(),
            next_correlation: AtomicI32::new(1),
            pending,
            writer: tokio::sync::Mutex::new(wr),
            closed,
            versions: HashMap::new(),
            reader,
        };
        // v3 is flexible and understood by Kafka 2.4+ and Runnel.
        let resp = conn
            .send(
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("runnel"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
                3,
            )
            .await
            .map_err(|e| match e {
                // Under TLS 1.3 the broker checks a client certificate after the handshake
                // returned here, and refuses by closing: the first request is what fails.
                BrokerError::Io { source, .. } if security.tls.is_some() => BrokerError::Tls(format!(
                    "{addr} closed the connection after the handshake ({source}): does it require a client certificate (ssl.certificate.location, ssl.key.location), or refuse this one?"
                )),
                other => other,
            })?;
        if resp.error_code != 0 {
            return Err(kafka_error("ApiVersions", resp.error_code, ""));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some((mechanism, user, password)) = &security.sasl {
            conn.authenticate(*mechanism, user, password).await?;
        }
        Ok(Arc::new(conn))
    }

    /// SaslHandshake v1 and the SaslAuthenticate exchange of `mechanism`.
    async fn authenticate(
        &self,
        mechanism: SaslMechanism,
        user: &str,
        password: &str,
    ) -> Result<(), BrokerError> {
        let refused = |reason: String| BrokerError::Authentication {
            addr: self.addr.clone(),
            reason,
        };
        let handshake = self
            .send(
                SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism.name())),
                1,
            )
            .await?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "{} ({}); the broker offers {}",
                crate::codes::name(handshake.error_code),
                mechanism.name(),
                offered.join(", ")
            )));
        }
        let version = self.version(ApiKey::SaslAuthenticate, (0, 2))?;
        let step = |token: Vec<u8>| async move {
            let resp = self
                .send(
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                    version,
                )
                .await?;
            if resp.error_code != 0 {
                let message = resp.error_message.as_ref().map_or("", |m| m.as_str());
                return Err(refused(format!(
                    "{}: {message}",
                    crate::codes::name(resp.error_code)
                )));
            }
            Ok(resp.auth_bytes)
        };
        match mechanism {
            SaslMechanism::Plain => {
                step(format!("\0{user}\0{password}").into_bytes()).await?;
            }
            SaslMechanism::Scram(m) => {
                let (mut exchange, first) = ClientExchange::start(m, user, password);
                let server_first = step(first).await?;
                let client_final = exchange
                    .client_final(&server_first)
                    .map_err(|e| refused(e.to_string()))?;
                let server_final = step(client_final).await?;
                exchange
                    .verify_server_final(&server_final)
                    .map_err(|e| refused(e.to_string()))?;
            }
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The highest version of `key` in `ours` that the broker serves.
    pub fn version(&self, key: ApiKey, ours: (i16, i16)) -> Result<i16, BrokerError> {
        let unsupported = || BrokerError::Unsupported {
            api: api_label(key),
        };
        let &(min, max) = self.versions.get(&(key as i16)).ok_or_else(unsupported)?;
        let v = ours.1.min(max);
        if v < ours.0.max(min) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// Sends `req` at `version` and waits for its response.
    pub async fn send<R: Request>(&self, req: R, version: i16) -> Result<R::Response, BrokerError> {
        self.start(req, version).await?.await
    }

    /// Writes `req` now and returns a future of its response, so that a caller can have several
    /// requests in flight and still have them written (and answered) in the order it chose.
    pub async fn start<R: Request>(
        &self,
        req: R,
        version: i16,
    ) -> Result<
        impl Future<Output = Result<R::Response, BrokerError>> + Send + 'static + use<R>,
        BrokerError,
    > {
        let mut body = BytesMut::with_capacity(128);
        req.encode(&mut body, version)
            .map_err(|e| BrokerError::Malformed(format!("encoding a request: {e}")))?;
        self.start_raw::<R>(version, &[body.freeze()]).await
    }

    /// [`start`](Self::start) for a request body already encoded at `version`, in parts that
    /// are written one after the other (so that large record batches go out from their own
    /// buffers instead of being copied into one).
    pub async fn start_raw<R: Request>(
        &self,
        version: i16,
        body: &[Bytes],
    ) -> Result<
        impl Future<Output = Result<R::Response, BrokerError>> + Send + 'static + use<R>,
        BrokerError,
    > {
        let addr = self.addr.clone();
        let io = move |m: String| BrokerError::Io {
            addr: addr.clone(),
            source: std::io::Error::other(m),
        };
        let id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| BrokerError::Malformed(format!("encoding a request header: {e}")))?;
        let len = buf.len() - 4 + body.iter().map(|b| b.len()).sum::<usize>();
        let len = i32::try_from(len)
            .map_err(|_| BrokerError::Malformed(format!("a request of {len} bytes")))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.is_closed() {
            self.pending.lock().remove(&id);
            return Err(io("the connection is closed".into()));
        }
        {
            let mut w = self.writer.lock().await;
            for part in std::iter::once(&buf[..]).chain(body.iter().map(|b| &b[..])) {
                if let Err(e) = w.write_all(part).await {
                    // Part of a frame may be out: nothing more can be sent on this connection.
                    self.closed.store(true, Ordering::Release);
                    self.pending.lock().remove(&id);
                    return Err(io(e.to_string()));
                }
            }
        }
        Ok(async move {
            let mut frame = rx
                .await
                .map_err(|_| io("the connection closed".into()))?
                .map_err(&io)?;
            let malformed = |e: String| {
                BrokerError::Malformed(format!(
                    "{} v{version} response: {e}",
                    api_label_i16(R::KEY)
                ))
            };
            ResponseHeader::decode(&mut frame, R::Response::header_version(version))
                .map_err(|e| malformed(e.to_string()))?;
            R::Response::decode(&mut frame, version).map_err(|e| malformed(e.to_string()))
        })
    }
}

fn api_label_i16(key: i16) -> &'static str {
    ApiKey::try_from(key).map_or("request", api_label)
}

/// A [`BrokerError::Kafka`] for an error code in a response.
pub(crate) fn kafka_error(api: &'static str, code: i16, context: &str) -> BrokerError {
    BrokerError::Kafka {
        api,
        code,
        name: crate::codes::name(code),
        context: if context.is_empty() {
            String::new()
        } else {
            format!(": {context}")
        },
    }
}
