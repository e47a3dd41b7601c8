//! The broker's TLS, SASL and ACLs against clients nobody here wrote (confluent-kafka, kcat)
//! and Runnel's own `--bootstrap` commands (topics, groups, produce, consume, a SQL job, a
//! Connect worker), all over `SASL_SSL`; and DeleteRecords from confluent-kafka's AdminClient.
//!
//! Certificates come from the `openssl` command (a CA and a server certificate for
//! localhost/127.0.0.1); users are added with `runnel users add`, so the security file holds
//! only salted SCRAM credentials.

use crate::broker::{BrokerProc, kcat, python};
use crate::support::wait_for;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ALICE: (&str, &str) = ("alice", "alice-secret");
const BOB: (&str, &str) = ("bob", "bob-secret");
const ADMIN: (&str, &str) = ("admin", "admin-secret");

/// alice writes and reads `secure-*` topics; bob only reads them; both use any group; admin
/// is a super user; the TLS client whose certificate names CN=client-a owns `mtls-*` topics.
const ACLS: &str = r#"
super_users = ["User:admin"]

[[acls]]
principal = "User:CN=client-a"
resource = "topic"
name = "mtls-"
pattern = "prefixed"
operations = ["read", "write", "create"]

[[acls]]
principal = "User:alice"
resource = "topic"
name = "secure-"
pattern = "prefixed"
operations = ["read", "write", "create"]

[[acls]]
principal = "User:bob"
resource = "topic"
name = "secure-"
pattern = "prefixed"
operations = ["read"]

[[acls]]
principal = "User:*"
resource = "group"
name = "*"
operations = ["read"]
"#;

/// A CA, a server certificate signed by it, and a security file with three users and ACLs.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |command: String| {
            let args: Vec<&str> = command.split_whitespace().collect();
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=runnel-test-ca"
        ));
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "client-a")] {
            openssl(format!(
                "req {ec} -keyout {name}.key -out {name}.csr -subj /CN={cn}"
            ));
            openssl(format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile san.ext"
            ));
        }
        let security = d.join("security.toml");
        std::fs::write(&security, ACLS).unwrap();
        for (user, password) in [ALICE, BOB, ADMIN] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
                .args(["users", "add", user, "--security-file"])
                .arg(&security)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
            assert!(child.wait().unwrap().success(), "runnel users add {user}");
        }
        let text = std::fs::read_to_string(&security).unwrap();
        assert!(
            !text.contains("secret"),
            "passwords are stored salted: {text}"
        );
        assert!(text.contains("User:alice"), "the ACLs are kept: {text}");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn broker(&self) -> BrokerProc {
        let (cert, key, security) = (
            self.path("server.pem"),
            self.path("server.key"),
            self.path("security.toml"),
        );
        BrokerProc::start_with(
            &self.path("data"),
            &[
                "--listen",
                "SASL_SSL://127.0.0.1:0",
                "--ssl-cert",
                cert.to_str().unwrap(),
                "--ssl-key",
                key.to_str().unwrap(),
                "--security-file",
                security.to_str().unwrap(),
            ],
        )
    }

    /// A `--command-config` file for `user` with `mechanism`.
    fn client_properties(&self, (user, password): (&str, &str), mechanism: &str) -> PathBuf {
        let path = self.path(&format!("{user}-{mechanism}.properties"));
        std::fs::write(
            &path,
            format!(
                "# as Kafka's tools take it\nsecurity.protocol=SASL_SSL\nsasl.mechanism={mechanism}\nsasl.username={user}\nsasl.password={password}\nssl.ca.location={}\n",
                self.path("ca.pem").display()
            ),
        )
        .unwrap();
        path
    }
}

/// Runs tests/interop/security.py and asserts it printed "ok".
fn scenario(py: &Path, setup: &Setup, addr: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/security.py");
    let (name, rest) = args.split_first().unwrap();
    let ca = setup.path("ca.pem");
    let out = Command::new(py)
        .arg(script)
        .args([name, addr, ca.to_str().unwrap()])
        .args(rest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok "),
        "security.py {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", stdout.trim());
}

/// `runnel --bootstrap ADDR --command-config PROPS ARGS`.
fn runnel(addr: &str, props: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "--bootstrap",
        addr,
        "--command-config",
        props.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    crate::compression::runnel(&all)
}

fn runnel_ok(addr: &str, props: &Path, args: &[&str]) -> String {
    let out = runnel(addr, props, args);
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sasl_ssl_with_plain_and_scram_users_and_acls_for_confluent_kafka_and_kcat() {
    let Some(py) = python("SASL_SSL with confluent-kafka") else {
        return;
    };
    let setup = Setup::new();
    let broker = setup.broker();
    let addr = broker.addr.as_str();
    let run = |args: &[&str]| scenario(&py, &setup, addr, args);
    // alice writes and reads with each mechanism; bob (SCRAM-SHA-512) reads with a group.
    run(&[
        "roundtrip",
        "secure-rides",
        "PLAIN",
        ALICE.0,
        ALICE.1,
        "5000",
    ]);
    run(&[
        "roundtrip",
        "secure-scram",
        "SCRAM-SHA-512",
        ALICE.0,
        ALICE.1,
        "5000",
    ]);
    run(&[
        "read",
        "secure-rides",
        "SCRAM-SHA-512",
        BOB.0,
        BOB.1,
        "5000",
    ]);
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        run(&["bad-password", "secure-rides", mechanism, BOB.0, "not-bobs"]);
    }
    // bob may not write: every delivery refused, and the topic still holds alice's 5000 alone.
    run(&[
        "denied-write",
        "secure-rides",
        "SCRAM-SHA-256",
        BOB.0,
        BOB.1,
    ]);
    run(&[
        "read",
        "secure-rides",
        "SCRAM-SHA-256",
        ALICE.0,
        ALICE.1,
        "5000",
    ]);

    if kcat("SASL_SSL with kcat") {
        let ca = setup.path("ca.pem");
        let kcat = |mechanism: &str, args: &[&str], input: &str| {
            let mut child = Command::new("kcat")
                .args(["-b", addr, "-X", "security.protocol=SASL_SSL", "-X"])
                .arg(format!("sasl.mechanisms={mechanism}"))
                .args([
                    "-X",
                    &format!("sasl.username={}", ALICE.0),
                    "-X",
                    &format!("sasl.password={}", ALICE.1),
                ])
                .args(["-X", &format!("ssl.ca.location={}", ca.display())])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "kcat {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
        // Written with SCRAM-SHA-512, read back with PLAIN.
        kcat("SCRAM-SHA-512", &["-P", "-t", "secure-kcat"], &lines);
        let read = kcat(
            "PLAIN",
            &["-C", "-t", "secure-kcat", "-o", "beginning", "-e", "-q"],
            "",
        );
        let mut got: Vec<&str> = read.lines().collect();
        got.sort_unstable();
        let mut want: Vec<&str> = lines.lines().collect();
        want.sort_unstable();
        assert_eq!(got, want, "kcat reads back what it wrote over SASL_SSL");
    }

    // Plaintext bytes on the TLS listener close that connection; the broker serves on.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0])
        .unwrap();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || raw.read(&mut buf).unwrap_or(0) == 0,
        "the plaintext connection was closed"
    );
    run(&["read", "secure-rides", "PLAIN", BOB.0, BOB.1, "5000"]);
}

#[test]
fn runnel_commands_jobs_and_connect_over_sasl_ssl() {
    let setup = Setup::new();
    let broker = setup.broker();
    let addr = broker.addr.as_str();
    let admin = setup.client_properties(ADMIN, "SCRAM-SHA-512");
    let alice = setup.client_properties(ALICE, "PLAIN");
    let bob = setup.client_properties(BOB, "SCRAM-SHA-256");

    runnel_ok(
        addr,
        &admin,
        &["topics", "create", "secure-events", "--partitions", "2"],
    );
    let describe = runnel_ok(addr, &admin, &["topics", "describe", "secure-events"]);
    assert!(describe.contains("secure-events"), "{describe}");
    let input = setup.path("events.jsonl");
    let lines: String = (0..1000)
        .map(|i| format!("{{\"id\":{i},\"name\":\"rider {i}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    runnel_ok(
        addr,
        &alice,
        &[
            "produce",
            "secure-events",
            "--file",
            input.to_str().unwrap(),
        ],
    );

    // bob may read but not write (Runnel's producer is idempotent, and an idempotent producer
    // needs WRITE on some topic for its producer id, as in Kafka 3), and a wrong password is
    // refused by name.
    let out = runnel(
        addr,
        &bob,
        &[
            "produce",
            "secure-events",
            "--file",
            input.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("CLUSTER_AUTHORIZATION_FAILED"),
        "{stderr}"
    );
    let wrong = setup.path("wrong.properties");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&bob)
            .unwrap()
            .replace(BOB.1, "guess"),
    )
    .unwrap();
    let out = runnel(addr, &wrong, &["topics", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SASL_AUTHENTICATION_FAILED"),
        "{stderr}"
    );
    let read = runnel_ok(
        addr,
        &bob,
        &[
            "consume",
            "secure-events",
            "--from-beginning",
            "--group",
            "bob-g",
            "--max-messages",
            "1000",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(
        read.lines().count(),
        1000,
        "bob reads exactly what alice wrote"
    );
    let groups = runnel_ok(addr, &admin, &["groups", "describe", "bob-g"]);
    assert!(groups.contains("secure-events"), "{groups}");

    // A SQL job over SASL_SSL, as the super user.
    let job = setup.path("job.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"shout\"\nsql = \"INSERT INTO \\\"secure-loud\\\" SELECT id, UPPER(name) AS name FROM \\\"secure-events\\\"\"\n\n[[input]]\nname = \"secure-events\"\nschema = \"id BIGINT, name VARCHAR\"\n\n[[output]]\nname = \"secure-loud\"\n",
    )
    .unwrap();
    runnel_ok(addr, &admin, &["run", job.to_str().unwrap(), "--until-end"]);
    let loud = runnel_ok(
        addr,
        &admin,
        &[
            "consume",
            "secure-loud",
            "--from-beginning",
            "--max-messages",
            "1000",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(loud.lines().count(), 1000);
    assert!(
        loud.contains("RIDER 999"),
        "{}",
        &loud[..loud.len().min(300)]
    );

    // A Connect worker over SASL_SSL: a file sink of the job's output.
    let sink = setup.path("loud.txt");
    let worker_file = setup.path("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"out\"\n\"connector.class\" = \"FileStreamSink\"\nfile = \"{}\"\ntopics = \"secure-loud\"\n",
            sink.display()
        ),
    )
    .unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "--bootstrap",
            addr,
            "--command-config",
            admin.to_str().unwrap(),
        ])
        .args(["connect", "--rest", "127.0.0.1:0"])
        .arg(&worker_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the sink file to hold the job's 1000 rows", || {
        std::fs::read_to_string(&sink).is_ok_and(|t| t.lines().count() >= 1000)
    });
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        std::fs::read_to_string(&sink).unwrap().lines().count(),
        1000
    );

    runnel_ok(addr, &admin, &["topics", "delete", "secure-events"]);
    let list = runnel_ok(addr, &admin, &["topics", "list"]);
    assert!(
        !list.contains("secure-events") && list.contains("secure-loud"),
        "{list}"
    );
}

#[test]
fn client_certificates_name_the_principal_on_an_ssl_listener() {
    let setup = Setup::new();
    let path = |name: &str| setup.path(name).to_str().unwrap().to_string();
    let broker = BrokerProc::start_with(
        &setup.path("data"),
        &[
            "--listen",
            "SSL://127.0.0.1:0",
            "--ssl-cert",
            &path("server.pem"),
            "--ssl-key",
            &path("server.key"),
            "--ssl-client-ca",
            &path("ca.pem"),
            "--security-file",
            &path("security.toml"),
        ],
    );
    let tls = [
        "-X".to_string(),
        "security.protocol=SSL".into(),
        "-X".into(),
        format!("ssl.ca.location={}", path("ca.pem")),
    ];
    let cert = [
        "-X".to_string(),
        format!("ssl.certificate.location={}", path("client.pem")),
        "-X".into(),
        format!("ssl.key.location={}", path("client.key")),
    ];
    let run = |args: &[&str], with_cert: bool| {
        let mut all: Vec<&str> = vec!["--bootstrap", &broker.addr];
        all.extend(tls.iter().map(String::as_str));
        if with_cert {
            all.extend(cert.iter().map(String::as_str));
        }
        all.extend_from_slice(args);
        crate::compression::runnel(&all)
    };
    // CN=client-a may create, write and read mtls-* topics: its certificate names it.
    let input = setup.path("orders.txt");
    std::fs::write(&input, "o1\no2\no3\n").unwrap();
    for args in [
        &["topics", "create", "mtls-orders"][..],
        &["produce", "mtls-orders", "--file", input.to_str().unwrap()],
    ] {
        let out = run(args, true);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(
        &[
            "consume",
            "mtls-orders",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout",
            "20s",
        ],
        true,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["o1", "o2", "o3"]
    );
    // Without a client certificate the handshake is refused.
    let out = run(&["topics", "list"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("TLS"), "{stderr}");
}
