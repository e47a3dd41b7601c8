//! A connection's session: who the client is (its principal) and where it stands in SASL
//! authentication; SaslHandshake and SaslAuthenticate; and the ACL check every API asks.
//!
//! Contract:
//! - On a `SASL_*` listener a session starts unauthenticated: only ApiVersions, SaslHandshake
//!   and SaslAuthenticate are served. After SaslHandshake v1 the tokens travel in
//!   SaslAuthenticate; after v0 (Kafka 0.10's way) as bare size-prefixed frames.
//!   PLAIN is one token; SCRAM two (client-first, client-final). Credentials are checked
//!   against the security file's salted SCRAM credentials; a failure is answered with
//!   SASL_AUTHENTICATION_FAILED and the connection is closed, as Kafka does.
//! - Otherwise the principal is `User:ANONYMOUS`, or `User:CN=...` for a TLS client that
//!   presented a certificate.
//! - [`Session::may`] answers with the broker's ACLs ([`crate::security::acl`]); without a
//!   security file everything is allowed.

use super::Outcome;
use super::parts::Part;
use super::str_bytes;
use crate::codes;
use crate::security::SaslMechanism;
use crate::security::acl::{Operation, ResourceType};
use crate::security::scram::{Credential, ServerExchange};
use crate::server::{Broker, ListenerInfo};
use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use std::sync::Arc;

/// Where a session stands in authentication.
pub(crate) enum Auth {
    /// Authenticated, or on a listener that does not ask for it.
    Done,
    /// On a SASL listener, before SaslHandshake.
    AwaitHandshake,
    /// After SaslHandshake chose `mechanism`: waiting for the first token.
    AwaitFirst(SaslMechanism),
    /// SCRAM after server-first: waiting for client-final.
    AwaitScramFinal(Box<(ServerExchange, Credential)>),
}

/// One connection's identity; see the module documentation.
pub(crate) struct Session {
    pub listener: Arc<ListenerInfo>,
    pub principal: String,
    pub auth: Auth,
    /// A v0 handshake chose bare token frames until authentication ends.
    pub raw_tokens: bool,
}

impl Session {
    pub(crate) fn new(listener: Arc<ListenerInfo>) -> Self {
        let auth = if listener.protocol.uses_sasl() {
            Auth::AwaitHandshake
        } else {
            Auth::Done
        };
        Self {
            listener,
            principal: "User:ANONYMOUS".into(),
            auth,
            raw_tokens: false,
        }
    }

    pub(crate) fn authenticated(&self) -> bool {
        matches!(self.auth, Auth::Done)
    }

    /// Whether this session's principal may do `op` to the resource.
    pub(crate) fn may(
        &self,
        b: &Broker,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        b.security
            .as_ref()
            .is_none_or(|s| s.allows(&self.principal, op, resource, name))
    }

    pub(crate) fn may_topic(&self, b: &Broker, op: Operation, topic: &str) -> bool {
        self.may(b, op, ResourceType::Topic, topic)
    }

    pub(crate) fn may_group(&self, b: &Broker, op: Operation, group: &str) -> bool {
        self.may(b, op, ResourceType::Group, group)
    }

    pub(crate) fn may_cluster(&self, b: &Broker, op: Operation) -> bool {
        self.may(b, op, ResourceType::Cluster, "kafka-cluster")
    }
}

pub(crate) fn handshake(
    session: &mut Session,
    r: SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let enabled = SaslMechanism::ALL
        .iter()
        .map(|m| str_bytes(m.name()))
        .collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(enabled);
    if !matches!(session.auth, Auth::AwaitHandshake) {
        return resp.with_error_code(codes::ILLEGAL_SASL_STATE);
    }
    match SaslMechanism::from_name(r.mechanism.as_str()) {
        Some(m) => {
            session.auth = Auth::AwaitFirst(m);
            session.raw_tokens = version == 0;
            resp
        }
        None => resp.with_error_code(codes::UNSUPPORTED_SASL_MECHANISM),
    }
}

/// Answers one SaslAuthenticate; `true` when the connection must close after the answer.
pub(crate) fn authenticate(
    b: &Broker,
    session: &mut Session,
    r: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let fail = |code: i16, message: &str| {
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)));
        (resp, true)
    };
    let Some(users) = b.security.as_ref() else {
        return fail(codes::ILLEGAL_SASL_STATE, "the broker has no users");
    };
    const REFUSED: &str = "Authentication failed: Invalid username or password";
    let token = r.auth_bytes;
    let ok = |bytes: Vec<u8>| {
        (
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
            false,
        )
    };
    match std::mem::replace(&mut session.auth, Auth::AwaitHandshake) {
        Auth::AwaitFirst(SaslMechanism::Plain) => {
            // authzid NUL user NUL password
            let mut parts = token.split(|&c| c == 0);
            let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
            let (Some(user), Some(password)) = (user, password) else {
                return fail(codes::SASL_AUTHENTICATION_FAILED, "malformed PLAIN token");
            };
            let user = String::from_utf8_lossy(user);
            if users.check_password(&user, &String::from_utf8_lossy(password)) {
                tracing::debug!(%user, "authenticated with PLAIN");
                session.principal = format!("User:{user}");
                session.auth = Auth::Done;
                ok(Vec::new())
            } else {
                tracing::info!(%user, "SASL PLAIN authentication failed");
                fail(codes::SASL_AUTHENTICATION_FAILED, REFUSED)
            }
        }
        Auth::AwaitFirst(SaslMechanism::Scram(m)) => {
            let mut exchange = match ServerExchange::start(m, &token) {
                Ok(x) => x,
                Err(e) => return fail(codes::SASL_AUTHENTICATION_FAILED, &e.to_string()),
            };
            let Some(cred) = users.credential(exchange.user(), m).cloned() else {
                tracing::info!(
                    user = exchange.user(),
                    mechanism = m.name(),
                    "unknown SASL user"
                );
                return fail(codes::SASL_AUTHENTICATION_FAILED, REFUSED);
            };
            let first = exchange.server_first(&cred);
            session.auth = Auth::AwaitScramFinal(Box::new((exchange, cred)));
            ok(first)
        }
        Auth::AwaitScramFinal(state) => {
            let (exchange, cred) = *state;
            match exchange.finish(&cred, &token) {
                Ok(server_final) => {
                    tracing::debug!(user = exchange.user(), "authenticated with SCRAM");
                    session.principal = format!("User:{}", exchange.user());
                    session.auth = Auth::Done;
                    ok(server_final)
                }
                Err(e) => {
                    tracing::info!(user = exchange.user(), error = %e, "SASL SCRAM authentication failed");
                    fail(codes::SASL_AUTHENTICATION_FAILED, REFUSED)
                }
            }
        }
        other => {
            session.auth = other;
            fail(codes::ILLEGAL_SASL_STATE, "SaslAuthenticate out of turn")
        }
    }
}

/// A bare SASL token after a v0 handshake: answered with a bare token frame; a refusal closes
/// the connection without an answer, as Kafka does for v0.
pub(crate) fn raw_token(b: &Broker, session: &mut Session, token: Bytes) -> Outcome {
    let (resp, close) = authenticate(
        b,
        session,
        SaslAuthenticateRequest::default().with_auth_bytes(token),
    );
    if !matches!(session.auth, Auth::AwaitFirst(_) | Auth::AwaitScramFinal(_)) {
        session.raw_tokens = false;
    }
    if close {
        return Outcome::RespondAndClose(Vec::new());
    }
    let mut frame = Vec::with_capacity(4 + resp.auth_bytes.len());
    frame.extend_from_slice(&(resp.auth_bytes.len() as i32).to_be_bytes());
    frame.extend_from_slice(&resp.auth_bytes);
    Outcome::Respond(vec![Part::Bytes(Bytes::from(frame))])
}
