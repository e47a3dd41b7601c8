"""Kafka transactions against a Kafka-compatible broker with confluent-kafka (librdkafka).
Driven by tests/e2e/transactions.rs.

usage: transactions.py BOOTSTRAP TOPIC [kafka-python]
  A transactional producer commits a transaction of 100 records, aborts one of 50, and commits
  one of 30 whose consumed offsets go in with send_offsets_to_transaction; a read_committed
  consumer sees exactly the 130 committed records, in order; a read_uncommitted one sees all
  180; the group's committed offset is the one sent in the committed transaction. A second
  producer with the same transactional.id fences the first: its next transaction fails with
  the fencing error.
With `ctp-setup N`, `ctp-run`, `ctp-verify N` (confluent-kafka): a consume-transform-produce
loop. Setup writes N records to TOPIC-in (2 partitions); run reads them read_committed from the
offsets its group committed, and per poll writes "t-<value>" to TOPIC-out and the consumed
offsets in one transaction (send_offsets_to_transaction), printing "committed K", until it
has read everything; verify checks that TOPIC-out holds each "t-v<i>" exactly once.
With `kafka-python`, kafka-python's transactional producer commits 20 records, aborts 10 and
commits 5 more; a read_committed consumer sees exactly the 25 committed ones, in order.
Prints "ok ..." and exits 0 on success; prints what differs and exits 1 otherwise."""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, TOPIC = sys.argv[1:3]
CLIENT = sys.argv[3] if len(sys.argv) > 3 else "confluent"


def fail(msg):
    print(f"FAIL [transactions] {msg}", flush=True)
    sys.exit(1)


def producer(txn_id):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": txn_id,
                  "transaction.timeout.ms": 20000})
    p.init_transactions(20)
    return p


def read_all(isolation, expected, group=None):
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group or f"read-{isolation}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": isolation})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append(m.value().decode())
    # A little longer: records past the expected count would be a failure too.
    end = time.time() + 1.5
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m.value().decode())
    c.close()
    return got


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

if CLIENT == "ctp-setup":
    n = int(sys.argv[4])
    for name, parts in [(f"{TOPIC}-in", 2), (f"{TOPIC}-out", 1)]:
        admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result()
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(n):
        p.produce(f"{TOPIC}-in", value=f"v{i}".encode(), key=str(i).encode())
    p.flush(30)
    print(f"ok setup {n}")
    sys.exit(0)

if CLIENT == "ctp-run":
    src = f"{TOPIC}-in"
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "ctp-group",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "auto.offset.reset": "earliest"})
    # Manual assignment from the group's committed offsets: a killed run leaves no member
    # behind whose session would hold a rebalance up.
    parts = [TopicPartition(src, p) for p in range(2)]
    committed = c.committed(parts, timeout=20)
    c.assign([TopicPartition(src, t.partition, t.offset if t.offset >= 0 else 0) for t in committed])
    p = producer("ctp")
    done, idle_since = 0, time.time()
    while time.time() - idle_since < 3:
        msgs = [m for m in c.consume(200, 0.5) if not m.error()]
        if not msgs:
            continue
        idle_since = time.time()
        p.begin_transaction()
        for m in msgs:
            p.produce(f"{TOPIC}-out", value=b"t-" + m.value())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
        p.commit_transaction(20)
        done += len(msgs)
        print(f"committed {done}", flush=True)
    print(f"ok ran {done}")
    sys.exit(0)

if CLIENT == "ctp-verify":
    n = int(sys.argv[4])
    TOPIC = f"{TOPIC}-out"
    got = read_all("read_committed", n, group="ctp-verify")
    want = sorted(f"t-v{i}" for i in range(n))
    if sorted(got) != want:
        dup = len(got) - len(set(got))
        fail(f"{len(got)} outputs for {n} inputs ({dup} repeated)")
    print(f"ok each of {n} outputs once")
    sys.exit(0)

admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC].result()

if CLIENT == "kafka-python":
    from kafka import KafkaProducer

    kp = KafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id="kp-txn")
    kp.init_transactions()
    for prefix, n, commit in [("k", 20, True), ("x", 10, False), ("m", 5, True)]:
        kp.begin_transaction()
        for i in range(n):
            kp.send(TOPIC, f"{prefix}{i}".encode())
        if commit:
            kp.commit_transaction()
        else:
            kp.flush()
            kp.abort_transaction()
    kp.close()
    got = read_all("read_committed", 25)
    want = [f"k{i}" for i in range(20)] + [f"m{i}" for i in range(5)]
    if got != want:
        fail(f"read_committed saw {got[:30]}")
    print("ok kafka-python committed=25 aborted=10")
    sys.exit(0)

p = producer("txn-interop")
p.begin_transaction()
for i in range(100):
    p.produce(TOPIC, value=f"a{i}".encode())
p.commit_transaction(20)

p.begin_transaction()
for i in range(50):
    p.produce(TOPIC, value=f"b{i}".encode())
p.flush(20)
p.abort_transaction(20)

p.begin_transaction()
for i in range(30):
    p.produce(TOPIC, value=f"c{i}".encode())
meta = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "txn-group"}).consumer_group_metadata()
p.send_offsets_to_transaction([TopicPartition("source", 0, 42)], meta, 20)
p.commit_transaction(20)

committed = read_all("read_committed", 130)
want = [f"a{i}" for i in range(100)] + [f"c{i}" for i in range(30)]
if committed != want:
    fail(f"read_committed saw {len(committed)} records, expected 130: first differences "
         f"{[(i, g, w) for i, (g, w) in enumerate(zip(committed, want)) if g != w][:5]}")
uncommitted = read_all("read_uncommitted", 180)
if len(uncommitted) != 180:
    fail(f"read_uncommitted saw {len(uncommitted)} records, expected 180")

c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "txn-group"})
offsets = c.committed([TopicPartition("source", 0)], timeout=10)
c.close()
if offsets[0].offset != 42:
    fail(f"the group's committed offset is {offsets[0].offset}, expected 42")

# Fencing: a second producer with the same id takes over; the first one's next
# transaction fails with the fencing error.
p.begin_transaction()
p.produce(TOPIC, value=b"zombie")
p2 = producer("txn-interop")
fenced = False
try:
    p.commit_transaction(20)
except KafkaException as e:
    err = e.args[0]
    fenced = err.fatal() or "fenc" in str(err).lower() or "epoch" in str(err).lower()
    fence_msg = str(err)
if not fenced:
    fail("the first producer committed after a second one with its transactional.id initialised")
p2.begin_transaction()
p2.produce(TOPIC, value=b"after")
p2.commit_transaction(20)
final = read_all("read_committed", 131, group="final")
if "zombie" in final or final[-1:] != ["after"] or len(final) != 131:
    fail(f"after fencing read_committed saw {len(final)} records ending {final[-3:]}")
print(f"ok committed=130 all=180 offsets=42 fenced ({fence_msg})")
