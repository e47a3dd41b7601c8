//! TLS configurations from PEM files, for the broker's `SSL://` and `SASL_SSL://` listeners and
//! for Runnel's client (rustls on the ring provider).
//!
//! Contract:
//! - [`server_config`] takes a certificate chain and its private key, and optionally a CA whose
//!   client certificates are then required (Kafka's `ssl.client.auth=required`).
//! - [`client_config`] trusts the CA file given (Kafka's `ssl.ca.location`), or else the
//!   system's PEM bundle, and optionally presents a client certificate.
//! - Every file problem is an error naming the file.
//! - [`buffered`] is the socket both ends run TLS over.

use crate::error::BrokerError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The socket under a TLS stream, read through a buffer. Why: rustls asks its reader for at
/// most 4 KiB at a time (`DeframerVecBuffer::prepare_read`), so straight on the socket a
/// megabyte Fetch answer costs 256 `recv` calls and as many wakeups; from this buffer one
/// `recv` serves 64 of them. Writes pass through unbuffered (rustls gathers its records).
pub(crate) fn buffered(
    socket: tokio::net::TcpStream,
) -> tokio::io::BufReader<tokio::net::TcpStream> {
    tokio::io::BufReader::with_capacity(256 << 10, socket)
}

/// Where the broker's TLS certificate and key are (Kafka's `ssl.keystore.*` as PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

// rustls deprecates ring's provider for lacking post-quantum key exchange; aws-lc-rs, which
// has it, needs cmake and a long C build in CI. Classic X25519/P-256 is what Kafka clients use.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::Tls(format!("{}: {reason}", path.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, BrokerError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, e))
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, BrokerError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| tls_error(path, e))?;
    }
    Ok(roots)
}

/// The broker's TLS configuration.
///
/// # Errors
///
/// `BrokerError::Tls` naming the file if the certificate chain is missing or has no PEM
/// certificate, the key cannot be read or does not match it, or the client CA cannot be read
/// or used.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| tls_error(&files.key, e))?;
    Ok(Arc::new(config))
}

/// The client's TLS configuration: trust `ca` (else the system bundle), present `identity`
/// (certificate, key) when given.
///
/// # Errors
///
/// `BrokerError::Tls` naming the file if `ca` (or, without it, the system's bundle) has no
/// usable certificate, or the identity's certificate or key cannot be read or used together.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, BrokerError> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => system_roots()?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| tls_error(key_path, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The CA bundle Debian and most Linux systems keep (as librdkafka's default `probe` finds).
fn system_roots() -> Result<rustls::RootCertStore, BrokerError> {
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    let bundle = BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| {
            BrokerError::Tls(
                "no system CA bundle found: set ssl.ca.location to the broker's CA".into(),
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(bundle)? {
        // A system bundle may hold certificates webpki rejects; the others still serve.
        let _ = roots.add(c);
    }
    Ok(roots)
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, der) = der.split_first()?;
    let (len, der) = if first < 0x80 {
        (first as usize, der)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let len = der[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &der[n..])
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

/// The subject's common name (CN) of a certificate, for the principal of a client that
/// authenticated with one (Kafka names it by its distinguished name; Runnel by `CN=...`).
pub(crate) fn subject_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    let (_, certificate, _) = der_element(cert.as_ref()).filter(|e| e.0 == SEQUENCE)?;
    let (_, tbs, _) = der_element(certificate).filter(|e| e.0 == SEQUENCE)?;
    let mut fields = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, then subject.
    if fields.first() == Some(&0xa0) {
        fields = der_element(fields)?.2;
    }
    for _ in 0..4 {
        fields = der_element(fields)?.2;
    }
    let (_, mut names, _) = der_element(fields).filter(|e| e.0 == SEQUENCE)?;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    while !names.is_empty() {
        let (_, set, rest) = der_element(names)?;
        names = rest;
        let (_, pair, _) = der_element(set)?;
        let (_, oid, value) = der_element(pair)?;
        if oid == CN_OID {
            let (_, text, _) = der_element(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}
