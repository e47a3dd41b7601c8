//! The security file: users with their salted SCRAM credentials, super users and ACLs; and
//! the authorizer that answers "may this principal do this to that resource".
//!
//! Contract (Kafka's `StandardAuthorizer` semantics, simplified to one file):
//! - A principal is `User:NAME` (`User:ANONYMOUS` on a listener without authentication).
//! - ACLs are enforced when the file names at least one ACL or super user; then a request is
//!   allowed if the principal is a super user, or no DENY ACL matches and an ALLOW ACL matches
//!   the operation or one that implies it (READ, WRITE, DELETE and ALTER imply DESCRIBE;
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL implies every one). A resource no ACL names is
//!   refused unless `allow_everyone_if_no_acl_found = true` (Kafka's default is false).
//! - A file that cannot be read or parsed is an error naming the file, the line and the field.

use super::scram::{Credential, Mechanism};
use crate::error::BrokerError;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What an ACL can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

/// Kafka's ACL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    /// Whether an ACL granting `self` grants `wanted`.
    fn covers(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Pattern {
    #[default]
    Literal,
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Permission {
    #[default]
    Allow,
    Deny,
}

/// One ACL of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Acl {
    /// `User:NAME`, or `User:*` for everyone.
    principal: String,
    resource: ResourceType,
    /// The resource's name (`*` for every one); for `cluster`, `kafka-cluster` or omitted.
    #[serde(default = "wildcard")]
    name: String,
    #[serde(default)]
    pattern: Pattern,
    operations: Vec<Operation>,
    #[serde(default)]
    permission: Permission,
}

fn wildcard() -> String {
    "*".into()
}

impl Acl {
    fn matches(&self, principal: &str, resource: ResourceType, name: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && self.resource == resource
            && (resource == ResourceType::Cluster
                || self.name == "*"
                || match self.pattern {
                    Pattern::Literal => self.name == name,
                    Pattern::Prefixed => name.starts_with(&self.name),
                })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityFileText {
    #[serde(default)]
    super_users: Vec<String>,
    #[serde(default)]
    allow_everyone_if_no_acl_found: bool,
    /// user name → mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`) → Kafka credential text.
    #[serde(default)]
    users: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    acls: Vec<Acl>,
}

/// A parsed security file; see the module documentation.
#[derive(Debug, Default)]
pub struct SecurityFile {
    pub path: PathBuf,
    super_users: Vec<String>,
    allow_everyone_if_no_acl_found: bool,
    users: HashMap<String, HashMap<Mechanism, Credential>>,
    acls: Vec<Acl>,
}

impl SecurityFile {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// `BrokerError::Security` naming `path` if the file cannot be read or is not the TOML expected,
    /// a user has a mechanism other than SCRAM-SHA-256/512 or a credential that does not parse, or
    /// an ACL's principal is not `User:NAME` or `User:*`.
    pub fn load(path: &Path) -> Result<Self, BrokerError> {
        let bad = |reason: String| BrokerError::Security {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let parsed: SecurityFileText = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut users = HashMap::new();
        for (user, creds) in parsed.users {
            let mut by_mechanism = HashMap::new();
            for (mechanism, text) in creds {
                let m = Mechanism::from_name(&mechanism).ok_or_else(|| {
                    bad(format!(
                        "users.{user}: unknown mechanism {mechanism:?} (SCRAM-SHA-256 or SCRAM-SHA-512)"
                    ))
                })?;
                let cred = Credential::from_kafka_string(&text)
                    .map_err(|e| bad(format!("users.{user}.{mechanism}: {e}")))?;
                by_mechanism.insert(m, cred);
            }
            users.insert(user, by_mechanism);
        }
        for (i, acl) in parsed.acls.iter().enumerate() {
            if !acl.principal.starts_with("User:") {
                return Err(bad(format!(
                    "acls[{i}].principal {:?} must be User:NAME or User:*",
                    acl.principal
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            super_users: parsed.super_users,
            allow_everyone_if_no_acl_found: parsed.allow_everyone_if_no_acl_found,
            users,
            acls: parsed.acls,
        })
    }

    /// The stored credential of `user` for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<&Credential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// Whether `password` is `user`'s (SASL PLAIN), checked against a stored SCRAM credential.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let Some(creds) = self.users.get(user) else {
            return false;
        };
        [Mechanism::Sha512, Mechanism::Sha256]
            .into_iter()
            .find_map(|m| creds.get(&m).map(|c| c.verify_password(m, password)))
            .unwrap_or(false)
    }

    /// Whether the file turns authorization on (it names an ACL or a super user).
    pub fn enforces_acls(&self) -> bool {
        !self.acls.is_empty() || !self.super_users.is_empty()
    }

    /// Whether `principal` may do `op` to the resource `(resource, name)`.
    pub fn allows(
        &self,
        principal: &str,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enforces_acls() || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let mut named = false;
        let mut allowed = false;
        for acl in &self.acls {
            if !acl.matches(principal, resource, name) {
                // Whether any ACL at all names the resource, for the no-ACL default.
                named |= acl.resource == resource && acl.matches(&acl.principal, resource, name);
                continue;
            }
            named = true;
            if acl.operations.iter().any(|o| o.covers(op)) {
                match acl.permission {
                    Permission::Deny => return false,
                    Permission::Allow => allowed = true,
                }
            }
        }
        allowed || (!named && self.allow_everyone_if_no_acl_found)
    }

    /// Whether `principal` may write to some topic (Kafka 3's rule for idempotent producers
    /// without IDEMPOTENT_WRITE on the cluster).
    pub fn may_write_somewhere(&self, principal: &str) -> bool {
        !self.enforces_acls()
            || self.super_users.iter().any(|s| s == principal)
            || self.acls.iter().any(|a| {
                (a.principal == principal || a.principal == "User:*")
                    && a.permission == Permission::Allow
                    && ((a.resource == ResourceType::Topic
                        && a.operations.iter().any(|o| o.covers(Operation::Write)))
                        || (a.resource == ResourceType::Cluster
                            && a.operations
                                .iter()
                                .any(|o| o.covers(Operation::IdempotentWrite))))
            })
    }
}

/// Adds or replaces `user`'s SCRAM credentials (both mechanisms) for `password` in the
/// security file at `path`, creating it if needed. Comments in the file are not kept.
///
/// # Errors
///
/// `BrokerError::Security` naming `path` if the file exists but cannot be read or parsed, its
/// `users` is not a table, it cannot be written, or the written file does not load
/// ([`SecurityFile::load`]).
pub fn add_user(
    path: &Path,
    user: &str,
    password: &str,
    iterations: u32,
) -> Result<(), BrokerError> {
    let bad = |reason: String| BrokerError::Security {
        path: path.to_path_buf(),
        reason,
    };
    let mut table: toml::Table = match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| bad(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(bad(e.to_string())),
    };
    let users = table
        .entry("users")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| bad("`users` is not a table".into()))?;
    let mut creds = toml::Table::new();
    for m in [Mechanism::Sha256, Mechanism::Sha512] {
        let cred = Credential::new(m, password, iterations);
        creds.insert(m.name().into(), toml::Value::String(cred.to_kafka_string()));
    }
    users.insert(user.into(), toml::Value::Table(creds));
    let text = toml::to_string(&table).map_err(|e| bad(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| bad(e.to_string()))?;
    // The credentials are salted, but the file also says who exists: not for everyone.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    SecurityFile::load(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SecurityFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.toml");
        std::fs::write(&path, text).unwrap();
        SecurityFile::load(&path).unwrap()
    }

    #[test]
    fn acls_follow_kafkas_rules() {
        let f = file(
            r#"
            super_users = ["User:admin"]
            [[acls]]
            principal = "User:alice"
            resource = "topic"
            name = "rides"
            pattern = "prefixed"
            operations = ["write"]
            [[acls]]
            principal = "User:*"
            resource = "topic"
            name = "rides-secret"
            operations = ["all"]
            permission = "deny"
            [[acls]]
            principal = "User:bob"
            resource = "group"
            name = "*"
            operations = ["read"]
            "#,
        );
        use Operation::*;
        use ResourceType::*;
        assert!(f.allows("User:alice", Write, Topic, "rides-eu"));
        assert!(
            f.allows("User:alice", Describe, Topic, "rides"),
            "write implies describe"
        );
        assert!(!f.allows("User:alice", Read, Topic, "rides"));
        assert!(
            !f.allows("User:alice", Write, Topic, "rides-secret"),
            "deny wins"
        );
        assert!(
            !f.allows("User:alice", Write, Topic, "orders"),
            "no ACL: refused"
        );
        assert!(f.allows("User:bob", Read, Group, "g1"));
        assert!(!f.allows("User:bob", Read, Topic, "rides"));
        assert!(f.allows("User:admin", Delete, Topic, "rides-secret"));
        assert!(f.may_write_somewhere("User:alice"));
        assert!(!f.may_write_somewhere("User:bob"));
    }

    #[test]
    fn users_are_stored_salted_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.toml");
        add_user(&path, "alice", "alice-secret", 4096).unwrap();
        add_user(&path, "bob", "bob-secret", 4096).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("alice-secret"), "{text}");
        let f = SecurityFile::load(&path).unwrap();
        assert!(f.check_password("alice", "alice-secret"));
        assert!(!f.check_password("alice", "bob-secret"));
        assert!(!f.check_password("carol", "x"));
        assert!(f.credential("bob", Mechanism::Sha512).is_some());
        assert!(!f.enforces_acls());
        assert!(f.allows("User:bob", Operation::Write, ResourceType::Topic, "t"));
    }

    #[test]
    fn a_bad_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.toml");
        std::fs::write(
            &path,
            "[[acls]]\nprincipal = \"User:a\"\nresource = \"topik\"\noperations = [\"read\"]\n",
        )
        .unwrap();
        let e = SecurityFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("security.toml") && e.contains("topik") && e.contains("line 3"),
            "{e}"
        );
    }
}
