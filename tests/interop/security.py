"""The broker's TLS, SASL and ACLs with confluent-kafka (librdkafka). Driven by
tests/e2e/security.rs.

usage: security.py SCENARIO BOOTSTRAP CA_PEM TOPIC MECHANISM USER PASSWORD [N]
  roundtrip N    as USER over SASL_SSL: produce N keyed messages (acks=all, idempotent),
                 consume them back with a group and commit: exactly the messages sent
  read N         as USER: a new group reads the topic from the start: exactly N messages
                 "0".."N-1" (what roundtrip wrote)
  bad-password   as USER with PASSWORD (a wrong one): the client reports SASL authentication
                 failed, and gets no metadata
  denied-write   as USER without WRITE on TOPIC (a plain, not idempotent, producer): every
                 delivery fails with TOPIC_AUTHORIZATION_FAILED
Prints "ok ..." and exits 0 on success; prints what differs and exits 1 otherwise."""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

SCENARIO, BOOTSTRAP, CA, TOPIC, MECHANISM, USER, PASSWORD = sys.argv[1:8]
ARGS = sys.argv[8:]


def fail(msg):
    print(f"FAIL [security {SCENARIO} {MECHANISM}] {msg}", flush=True)
    sys.exit(1)


def conf(**extra):
    c = {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_SSL",
         "ssl.ca.location": CA, "sasl.mechanisms": MECHANISM,
         "sasl.username": USER, "sasl.password": PASSWORD}
    c.update(extra)
    return c


def produce(n, idempotent=True):
    failed = []
    p = Producer(conf(**{"acks": "all", "enable.idempotence": idempotent, "linger.ms": 5}))

    def cb(err, _msg):
        if err is not None:
            failed.append(err)

    for i in range(n):
        while True:
            try:
                p.produce(TOPIC, key=f"k{i % 13}".encode(), value=str(i).encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    return left, failed


def read_all(group, n, commit):
    c = Consumer(conf(**{"group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False}))
    c.subscribe([TOPIC])
    seen = []
    idle = 0
    while len(seen) < n and idle < 30:
        msgs = c.consume(num_messages=10000, timeout=1.0)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            if m.error():
                fail(f"consume: {m.error()}")
            seen.append(int(m.value()))
    if commit and seen:
        c.commit(asynchronous=False)
    c.close()
    return seen


if SCENARIO == "roundtrip":
    n = int(ARGS[0])
    left, failed = produce(n)
    if left or failed:
        fail(f"produce: {left} not delivered, errors {failed[:3]}")
    seen = read_all(f"{TOPIC}-{USER}-rt", n, commit=True)
    if sorted(seen) != list(range(n)):
        fail(f"read {len(seen)} messages, {len(set(seen))} distinct; want 0..{n - 1} once each")
    print(f"ok security {MECHANISM} as {USER}: {n} produced and read back over SASL_SSL", flush=True)
elif SCENARIO == "read":
    n = int(ARGS[0])
    seen = read_all(f"{TOPIC}-{USER}-{MECHANISM}-read", n, commit=True)
    if sorted(seen) != list(range(n)):
        fail(f"read {len(seen)} messages, {len(set(seen))} distinct; want 0..{n - 1} once each")
    print(f"ok security {MECHANISM} as {USER}: read all {n} with a group", flush=True)
elif SCENARIO == "bad-password":
    # The client reports the refusal through error_cb, served by poll().
    errors = []
    p = Producer(conf(error_cb=errors.append))
    deadline = time.time() + 20
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.time() < deadline:
        p.poll(0.2)
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    if not auth or "Authentication failed" not in auth[0].str():
        fail(f"no authentication error reported: {errors}")
    try:
        p.list_topics(timeout=2)
        fail("list_topics succeeded with a wrong password")
    except KafkaException:
        pass
    print(f"ok security {MECHANISM} as {USER}: wrong password refused ({auth[0].str()})", flush=True)
elif SCENARIO == "denied-write":
    # Not idempotent: an idempotent producer needs WRITE on some topic for its producer id.
    left, failed = produce(10, idempotent=False)
    codes = {e.code() for e in failed}
    if left or codes != {KafkaError.TOPIC_AUTHORIZATION_FAILED}:
        fail(f"want every delivery TOPIC_AUTHORIZATION_FAILED; {left} undelivered, errors {failed[:3]}")
    print(f"ok security {MECHANISM} as {USER}: writes refused with TOPIC_AUTHORIZATION_FAILED", flush=True)
else:
    fail(f"unknown scenario {SCENARIO}")
