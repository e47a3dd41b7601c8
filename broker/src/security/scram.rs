//! SCRAM (RFC 5802, RFC 7677) as Kafka speaks it: the key derivation both sides share, the
//! broker's verifier and the client's exchange, for SHA-256 and SHA-512.
//!
//! Contract:
//! - [`Credential`] is what a broker stores per user and mechanism: salt, iterations, StoredKey
//!   and ServerKey, never the password (Kafka's `SCRAM-SHA-512=[salt=...,stored_key=...,...]`).
//!   [`Credential::verify_password`] checks a password against it, so PLAIN is served from the
//!   same salted credential.
//! - [`ServerExchange`] answers a client's first and final messages; any malformed message or
//!   wrong proof is [`ScramError`], which the broker reports as SASL_AUTHENTICATION_FAILED.
//! - [`ClientExchange`] is the other side, used by Runnel's client, and checks the server's
//!   signature so that a broker that does not know the password is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The two SCRAM mechanisms Kafka offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// The SASL mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name, if it is one of Kafka's SCRAM mechanisms.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's minimum iteration count is 4096; its tools default to it.
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's Hi(): PBKDF2 with the mechanism's HMAC and one output block.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password.as_bytes(), &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password.as_bytes(), &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("invalid username or password")]
    BadProof,
    #[error("the server's signature does not match: it does not hold this user's credential")]
    BadServerSignature,
}

/// A user's stored SCRAM credential for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// Derives the credential of `password` with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive(mechanism, password, &salt, iterations)
    }

    fn derive(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = mechanism.salted_password(password, salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was derived from (for SASL PLAIN).
    pub fn verify_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let other = Self::derive(mechanism, password, &self.salt, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }

    /// Kafka's text form: `salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=<n>`.
    pub fn to_kafka_string(&self) -> String {
        format!(
            "salt={},stored_key={},server_key={},iterations={}",
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key),
            self.iterations
        )
    }

    /// Parses [`Credential::to_kafka_string`]'s form.
    ///
    /// # Errors
    ///
    /// A message saying which part is wrong: a part that is not `key=value`, an unknown field, a
    /// value that is not base64 (or an iteration count that is not a number), or a missing field.
    pub fn from_kafka_string(s: &str) -> Result<Self, String> {
        let mut salt = None;
        let mut stored = None;
        let mut server = None;
        let mut iterations = None;
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            let b64 = |v: &str| B64.decode(v.trim()).map_err(|e| format!("{k}: {e}"));
            match k.trim() {
                "salt" => salt = Some(b64(v)?),
                "stored_key" => stored = Some(b64(v)?),
                "server_key" => server = Some(b64(v)?),
                "iterations" => {
                    iterations = Some(v.trim().parse().map_err(|e| format!("iterations: {e}"))?)
                }
                other => return Err(format!("unknown field {other:?}")),
            }
        }
        let missing = |f: &str| format!("missing {f}");
        Ok(Self {
            salt: salt.ok_or_else(|| missing("salt"))?,
            stored_key: stored.ok_or_else(|| missing("stored_key"))?,
            server_key: server.ok_or_else(|| missing("server_key"))?,
            iterations: iterations.ok_or_else(|| missing("iterations"))?,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random nonce of letters and digits, as Kafka's own (librdkafka 2.0 refuses a server
/// nonce holding `+` or `/`).
fn nonce() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bytes: [u8; 24] = rand::random();
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `key=value` attributes of a SCRAM message.
fn attributes(msg: &str) -> impl Iterator<Item = (char, &str)> {
    msg.split(',').filter_map(|a| {
        let mut chars = a.chars();
        let k = chars.next()?;
        a.get(1..)?.strip_prefix('=').map(|v| (k, v))
    })
}

fn attribute(msg: &str, key: char) -> Result<&str, ScramError> {
    attributes(msg)
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .ok_or_else(|| ScramError::Malformed(format!("no {key}= attribute in {msg:?}")))
}

/// SCRAM's username escaping (`=2C` for `,`, `=3D` for `=`).
fn unescape_name(n: &str) -> String {
    n.replace("=2C", ",").replace("=3D", "=")
}

fn escape_name(n: &str) -> String {
    n.replace('=', "=3D").replace(',', "=2C")
}

/// The broker's side of one exchange, after the client's first message.
pub struct ServerExchange {
    mechanism: Mechanism,
    user: String,
    client_first_bare: String,
    server_first: String,
    client_nonce: String,
    /// The combined nonce: the client's, then the server's.
    nonce: String,
}

impl ServerExchange {
    /// Reads the client's first message; returns the exchange and the user it names, whose
    /// credential the caller looks up for [`ServerExchange::server_first`].
    ///
    /// # Errors
    ///
    /// `ScramError::Malformed` if the message is not UTF-8, lacks the gs2 header (`n,` or `y,`), or
    /// lacks the `n=` (user) or `r=` (nonce) attribute.
    pub fn start(mechanism: Mechanism, client_first: &[u8]) -> Result<Self, ScramError> {
        let msg = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first is not UTF-8".into()))?;
        // gs2 header: "n,," (no channel binding, no authzid) or "n,a=authzid,".
        let bare = msg
            .splitn(3, ',')
            .nth(2)
            .filter(|_| msg.starts_with("n,") || msg.starts_with("y,"))
            .ok_or_else(|| ScramError::Malformed("client-first lacks the gs2 header".into()))?;
        let user = unescape_name(attribute(bare, 'n')?);
        let client_nonce = attribute(bare, 'r')?;
        Ok(Self {
            mechanism,
            user,
            client_first_bare: bare.to_string(),
            server_first: String::new(),
            client_nonce: client_nonce.to_string(),
            nonce: format!("{client_nonce}{}", nonce()),
        })
    }

    /// The user the client names.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server-first message for `credential` (the user's stored credential).
    pub fn server_first(&mut self, credential: &Credential) -> Vec<u8> {
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.server_first.clone().into_bytes()
    }

    /// Checks the client's final message against `credential`; returns the server-final
    /// message (the server's signature) on success.
    ///
    /// # Errors
    ///
    /// - `ScramError::Malformed` if the message is not UTF-8, has no `,p=` proof, no nonce or not
    ///   this exchange's nonce, or a proof that is not base64;
    /// - `ScramError::BadProof` if the proof does not match `credential` (wrong password).
    pub fn finish(
        &self,
        credential: &Credential,
        client_final: &[u8],
    ) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8".into()))?;
        let proof_at = msg
            .rfind(",p=")
            .ok_or_else(|| ScramError::Malformed("client-final has no proof".into()))?;
        let without_proof = &msg[..proof_at];
        // librdkafka 2.0 (Debian 12's, under kcat) sends its own nonce again before the
        // combined one; the proof covers the message as sent, and the server's part is there.
        let nonce = attribute(without_proof, 'r')?;
        if nonce != self.nonce && nonce != format!("{}{}", self.client_nonce, self.nonce) {
            return Err(ScramError::Malformed("the nonce does not match".into()));
        }
        let proof = B64
            .decode(&msg[proof_at + 3..])
            .map_err(|e| ScramError::Malformed(format!("proof: {e}")))?;
        let auth = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = self.mechanism.hmac(&credential.stored_key, auth.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&self.mechanism.hash(&client_key), &credential.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = self.mechanism.hmac(&credential.server_key, auth.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client's side of one exchange.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    server_signature: Vec<u8>,
}

impl ClientExchange {
    /// Starts an exchange as `user`; returns it and the client-first message.
    pub fn start(mechanism: Mechanism, user: &str, password: &str) -> (Self, Vec<u8>) {
        let client_nonce = nonce();
        let bare = format!("n={},r={client_nonce}", escape_name(user));
        let first = format!("n,,{bare}").into_bytes();
        let exchange = Self {
            mechanism,
            password: password.to_string(),
            client_first_bare: bare,
            client_nonce,
            server_signature: Vec::new(),
        };
        (exchange, first)
    }

    /// Answers the server-first message with the client-final message (the proof).
    ///
    /// # Errors
    ///
    /// `ScramError::Malformed` if the message is not UTF-8, its nonce does not extend ours, or its
    /// salt (`s=`, base64) or iteration count (`i=`) is missing or unreadable.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first is not UTF-8".into()))?;
        let nonce = attribute(msg, 'r')?;
        if !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours".into(),
            ));
        }
        let salt = B64
            .decode(attribute(msg, 's')?)
            .map_err(|e| ScramError::Malformed(format!("salt: {e}")))?;
        let iterations: u32 = attribute(msg, 'i')?
            .parse()
            .map_err(|e| ScramError::Malformed(format!("iterations: {e}")))?;
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{msg},{without_proof}", self.client_first_bare);
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_signature = m.hmac(&m.hmac(&salted, b"Server Key"), auth.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message.
    ///
    /// # Errors
    ///
    /// - `ScramError::Malformed` if the message is not UTF-8, carries the server's `e=` refusal, or
    ///   has no readable `v=` signature;
    /// - `ScramError::BadServerSignature` if the signature is not the one this password gives.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final is not UTF-8".into()))?;
        if let Ok(e) = attribute(msg, 'e') {
            return Err(ScramError::Malformed(format!("the server refused: {e}")));
        }
        let v = B64
            .decode(attribute(msg, 'v')?)
            .map_err(|e| ScramError::Malformed(format!("server signature: {e}")))?;
        if constant_time_eq(&v, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: the derivation matches the published messages.
    #[test]
    fn rfc7677_example_proof_and_signature() {
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = Credential::derive(m, "pencil", &salt, 4096);
        let mut server = ServerExchange::start(m, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        let first = server.server_first(&cred);
        assert_eq!(
            first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let server_final = server.finish(&cred, final_msg).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn client_and_server_agree_and_wrong_passwords_fail() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = Credential::new(m, "s3cret", 4096);
            for (password, ok) in [("s3cret", true), ("wrong", false)] {
                let (mut client, first) = ClientExchange::start(m, "al,ice", password);
                let mut server = ServerExchange::start(m, &first).unwrap();
                assert_eq!(server.user(), "al,ice");
                let sf = server.server_first(&cred);
                let cf = client.client_final(&sf).unwrap();
                match server.finish(&cred, &cf) {
                    Ok(fin) => {
                        assert!(ok);
                        client.verify_server_final(&fin).unwrap();
                    }
                    Err(e) => {
                        assert!(!ok, "{e}");
                        assert!(matches!(e, ScramError::BadProof));
                    }
                }
            }
            assert!(cred.verify_password(m, "s3cret"));
            assert!(!cred.verify_password(m, "s3cre"));
            let text = cred.to_kafka_string();
            assert_eq!(Credential::from_kafka_string(&text).unwrap(), cred);
        }
    }
}
