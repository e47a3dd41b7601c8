//! Security shared by the broker and the client: listener protocols, TLS, SASL (PLAIN and
//! SCRAM-SHA-256/512), the security file with users and ACLs, and the client's Kafka-style
//! security properties.
//!
//! Contract:
//! - [`SecurityProtocol`] is Kafka's four: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
//!   A [`Listener`] is `PROTOCOL://HOST:PORT` (a bare `HOST:PORT` is `PLAINTEXT`).
//! - [`ClientSecurity`] reads Kafka's client properties (`security.protocol`,
//!   `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`,
//!   `ssl.certificate.location`, `ssl.key.location`), from a map or a properties file (as
//!   Kafka's tools' `--command-config`); unknown `sasl.`/`ssl.`/`security.` keys are errors.

pub mod acl;
pub mod scram;
pub mod tls;

use crate::error::BrokerError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Kafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => {
                return Err(format!(
                    "unknown security protocol {s:?}: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                ));
            }
        })
    }
}

/// One listener: a protocol and an address (Kafka's `listeners` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    /// HOST:PORT.
    pub addr: String,
}

impl Listener {
    /// A `PLAINTEXT` listener at `addr`.
    pub fn plaintext(addr: impl Into<String>) -> Self {
        Listener {
            protocol: SecurityProtocol::Plaintext,
            addr: addr.into(),
        }
    }
}

impl std::str::FromStr for Listener {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("://") {
            Some((protocol, addr)) => Ok(Listener {
                protocol: protocol.parse()?,
                addr: addr.to_string(),
            }),
            None => Ok(Listener {
                protocol: SecurityProtocol::Plaintext,
                addr: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.protocol.name(), self.addr)
    }
}

/// SASL mechanisms Runnel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(scram::Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// Every mechanism the broker offers, in its handshake's order.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(scram::Mechanism::Sha256),
        SaslMechanism::Scram(scram::Mechanism::Sha512),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(SaslMechanism::Plain)
        } else {
            scram::Mechanism::from_name(name).map(SaslMechanism::Scram)
        }
    }
}

/// The client's security settings; see the module documentation.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub protocol: SecurityProtocol,
    /// With a SASL protocol: the mechanism, user and password.
    pub sasl: Option<(SaslMechanism, String, String)>,
    /// With a TLS protocol: the client configuration built from the `ssl.` properties.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ClientSecurity")
            .field("protocol", &self.protocol)
            .field("sasl", &self.sasl.as_ref().map(|(m, u, _)| (m.name(), u)))
            .finish()
    }
}

impl ClientSecurity {
    /// Reads Kafka's client properties; `place` names where they came from, for errors.
    ///
    /// # Errors
    ///
    /// `BrokerError::Config` (prefixed with `place`) for an unknown `security.`/`sasl.`/`ssl.`
    /// property, an unknown `security.protocol` or `sasl.mechanism`, a SASL protocol without
    /// `sasl.username` or `sasl.password`, `ssl.endpoint.identification.algorithm` other than
    /// `https`, or only one of the certificate and key; `BrokerError::Tls` if a CA, certificate or
    /// key file cannot be read or used (or, without a CA file, the system bundle).
    pub fn from_properties(
        props: &BTreeMap<String, String>,
        place: &str,
    ) -> Result<Self, BrokerError> {
        let bad = |reason: String| BrokerError::Config(format!("{place}: {reason}"));
        const KNOWN: &[&str] = &[
            "security.protocol",
            "sasl.mechanism",
            "sasl.mechanisms",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.endpoint.identification.algorithm",
        ];
        for k in props.keys() {
            let ours = ["security.", "sasl.", "ssl."]
                .iter()
                .any(|p| k.starts_with(p));
            if ours && !KNOWN.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown property {k:?}; Runnel reads {}",
                    KNOWN.join(", ")
                )));
            }
        }
        let get = |k: &str| props.get(k).map(|v| v.trim().to_string());
        let protocol: SecurityProtocol = match get("security.protocol") {
            Some(p) => p.parse().map_err(bad)?,
            None => SecurityProtocol::Plaintext,
        };
        let sasl = if protocol.uses_sasl() {
            let name = get("sasl.mechanism")
                .or_else(|| get("sasl.mechanisms"))
                .unwrap_or_else(|| "PLAIN".into());
            let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
                bad(format!(
                    "sasl.mechanism {name:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ))
            })?;
            let user =
                get("sasl.username").ok_or_else(|| bad("sasl.username is not set".into()))?;
            let password = props
                .get("sasl.password")
                .cloned()
                .ok_or_else(|| bad("sasl.password is not set".into()))?;
            Some((mechanism, user, password))
        } else {
            None
        };
        if let Some(check) = get("ssl.endpoint.identification.algorithm")
            && !check.eq_ignore_ascii_case("https")
        {
            return Err(bad(format!(
                "ssl.endpoint.identification.algorithm={check:?}: Runnel always checks the broker's name against its certificate (https); give the broker a certificate for the name or IP address clients use"
            )));
        }
        let tls = if protocol.uses_tls() {
            let ca = get("ssl.ca.location").map(PathBuf::from);
            let cert = get("ssl.certificate.location").map(PathBuf::from);
            let key = get("ssl.key.location").map(PathBuf::from);
            let identity = match (&cert, &key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => {
                    return Err(bad(
                        "ssl.certificate.location and ssl.key.location go together".into(),
                    ));
                }
            };
            Some(tls::client_config(ca.as_deref(), identity)?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            sasl,
            tls,
        })
    }

    /// Reads a Java-style properties file (`key=value` lines, `#` comments), as Kafka's tools'
    /// `--command-config`.
    ///
    /// # Errors
    ///
    /// `BrokerError::Config` if the file cannot be read, or names the line that is not
    /// `key=value` (nor `key:value`, blank or a comment).
    pub fn properties_file(path: &Path) -> Result<BTreeMap<String, String>, BrokerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?;
        let mut props = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .ok_or_else(|| {
                    BrokerError::Config(format!(
                        "{}:{}: expected key=value, found {line:?}",
                        path.display(),
                        i + 1
                    ))
                })?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_properties_as_kafka_names_them() {
        let s = ClientSecurity::from_properties(
            &props(&[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "alice"),
                ("sasl.password", "pw"),
            ]),
            "test",
        )
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslPlaintext);
        let (m, user, _) = s.sasl.clone().unwrap();
        assert_eq!((m.name(), user.as_str()), ("SCRAM-SHA-512", "alice"));
        assert!(
            !format!("{s:?}").contains("pw"),
            "the password stays out of logs"
        );
        for (bad, words) in [
            (
                vec![("sasl.usrname", "a")],
                "unknown property \"sasl.usrname\"",
            ),
            (
                vec![("security.protocol", "SASL_SSL")],
                "sasl.username is not set",
            ),
            (
                vec![("security.protocol", "TLS")],
                "unknown security protocol",
            ),
            (
                vec![("ssl.endpoint.identification.algorithm", "none")],
                "always checks the broker's name",
            ),
        ] {
            let e = ClientSecurity::from_properties(&props(&bad), "client.properties")
                .unwrap_err()
                .to_string();
            assert!(e.contains("client.properties") && e.contains(words), "{e}");
        }
        let l: Listener = "SASL_SSL://0.0.0.0:9093".parse().unwrap();
        assert_eq!(
            (l.protocol, l.addr.as_str()),
            (SecurityProtocol::SaslSsl, "0.0.0.0:9093")
        );
        assert_eq!(
            "127.0.0.1:9092".parse::<Listener>().unwrap(),
            Listener::plaintext("127.0.0.1:9092")
        );
    }
}
