"""Interoperability checks of a Kafka-compatible broker with real clients (confluent-kafka, i.e.
librdkafka, and kafka-python). Driven by tests/e2e/broker.rs.

usage: interop.py CLIENT SCENARIO BOOTSTRAP TOPIC [ARGS]
  CLIENT   confluent | kafka-python
  roundtrip N      create a 4-partition topic, produce N keyed messages (acks=all, idempotence),
                   consume them back with a group: exactly the same messages, per-key order kept
  group N          6 partitions, N messages; consumer A starts, B joins late, partitions
                   rebalance; both commit after every poll; then a restarted consumer must
                   read exactly the messages produced after the commits (no gaps, no repeats)
  produce-acked    create the topic with flush.messages=1 (Runnel durability `always`) and
                   produce until killed, printing "acked I" for every acknowledged message I
  verify-acked F   every I in the "acked I" lines of file F is in the topic
  produce-n N      like produce-acked, but N messages, then flush: the broker may be killed and
                   restarted meanwhile; every message must end acknowledged ("ok" at the end)
  verify-exact N   the topic holds each of 0..N-1 exactly once (no loss, no duplicates)
  produce-compressed CODEC N
                   create a 2-partition topic and produce N messages (value "I", key "kI%31")
                   with compression.type CODEC (gzip, snappy, lz4, zstd)
  admin            (confluent only) AdminClient: create a 2-partition topic, create_partitions
                   to 4, describe_configs shows its retention.ms and cleanup.policy, an
                   incremental_alter_configs of retention.ms is seen by describe_configs,
                   describe_cluster names one node
  offset-delete    (kafka-python only) KafkaAdminClient: commit offsets of 2 partitions for a
                   group without members (alter_group_offsets), delete one (OffsetDelete):
                   list_group_offsets shows only the other
  list-offsets     (confluent only) records with timestamps 1000, 5000, 3000, 7000, 2000; the
                   admin API's OffsetSpec.max_timestamp() (ListOffsets -3) and
                   earliest/latest, and the consumer's offsets_for_times, give Kafka's answers
  delete-records   (confluent only) 100 records in partition 0; AdminClient.delete_records up
                   to offset 40 answers low watermark 40, earliest is then 40, and a consumer
                   from the beginning reads offsets 40..99
Prints "ok ..." and exits 0 on success; prints what differs and exits 1 otherwise."""
import sys
import threading
import time

CLIENT, SCENARIO, BOOTSTRAP, TOPIC = sys.argv[1:5]
ARGS = sys.argv[5:]


def fail(msg):
    print(f"FAIL [{CLIENT} {SCENARIO}] {msg}", flush=True)
    sys.exit(1)


# ---- client adapters: the same five operations over both libraries ----

if CLIENT == "confluent":
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    def create_topic(partitions, config=None):
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        t = NewTopic(TOPIC, num_partitions=partitions, replication_factor=1, config=config or {})
        for f in admin.create_topics([t]).values():
            f.result()

    class Sender:
        def __init__(self, on_ack=None, compression="none"):
            self.failed = []
            self.on_ack = on_ack
            self.p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all",
                               "enable.idempotence": True, "linger.ms": 5,
                               "compression.type": compression})

        def _cb(self, err, msg):
            if err is not None:
                self.failed.append(err)
            elif self.on_ack:
                self.on_ack(msg.value())

        def send(self, key, value):
            while True:
                try:
                    self.p.produce(TOPIC, key=key, value=value, on_delivery=self._cb)
                    break
                except BufferError:
                    self.p.poll(0.05)
            self.p.poll(0)

        def flush(self):
            if self.p.flush(60) != 0 or self.failed:
                fail(f"produce failed: {self.failed[:3]}")

    class Reader:
        def __init__(self, group, auto_commit):
            self.c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group,
                               "auto.offset.reset": "earliest",
                               "enable.auto.commit": auto_commit,
                               "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
            self.c.subscribe([TOPIC])

        def poll(self, max_records=10000, timeout=1.0):
            out = []
            for m in self.c.consume(num_messages=max_records, timeout=timeout):
                if m.error():
                    raise KafkaException(m.error())
                out.append((m.partition(), m.key(), m.value()))
            return out

        def commit(self):
            self.c.commit(asynchronous=False)

        def assignment(self):
            return sorted(tp.partition for tp in self.c.assignment())

        def close(self):
            self.c.close()

elif CLIENT == "kafka-python":
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    def create_topic(partitions, config=None):
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        admin.create_topics([NewTopic(TOPIC, partitions, 1, topic_configs=config or {})])
        admin.close()

    class Sender:
        def __init__(self, on_ack=None, compression="none"):
            self.failed = []
            self.on_ack = on_ack
            kw = {"enable_idempotence": True} if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG else {}
            if compression != "none":
                kw["compression_type"] = compression
            self.p = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, **kw)

        def send(self, key, value):
            f = self.p.send(TOPIC, key=key, value=value)
            f.add_errback(self.failed.append)
            if self.on_ack:
                f.add_callback(lambda _md, v=value: self.on_ack(v))

        def flush(self):
            self.p.flush(60)
            if self.failed:
                fail(f"produce failed: {self.failed[:3]}")

    class Reader:
        def __init__(self, group, auto_commit):
            self.c = KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id=group,
                                   auto_offset_reset="earliest", enable_auto_commit=auto_commit,
                                   session_timeout_ms=6000, heartbeat_interval_ms=500)

        def poll(self, max_records=10000, timeout=1.0):
            out = []
            for tp, msgs in self.c.poll(timeout_ms=int(timeout * 1000), max_records=max_records).items():
                out.extend((tp.partition, m.key, m.value) for m in msgs)
            return out

        def commit(self):
            self.c.commit()

        def assignment(self):
            return sorted(tp.partition for tp in self.c.assignment())

        def close(self):
            self.c.close(autocommit=False)
else:
    fail(f"unknown client {CLIENT}")


# ---- scenarios ----

def roundtrip(n):
    keys = 97
    create_topic(4)
    s = Sender()
    for i in range(n):
        key = f"k{i % keys}"
        s.send(key.encode(), f"{key}:{i}".encode())
    s.flush()
    r = Reader(f"{TOPIC}-readers", True)
    got, count, deadline = {}, 0, time.time() + 120
    while count < n and time.time() < deadline:
        for _, k, v in r.poll():
            got.setdefault(k.decode(), []).append(int(v.decode().split(":")[1]))
            count += 1
    r.close()
    for k in range(keys):
        want = list(range(k, n, keys))
        have = got.get(f"k{k}", [])
        if have != want:
            fail(f"key k{k}: expected {len(want)} values in order, got {len(have)}: {have[:5]}...")
    if count != n:
        fail(f"expected {n} messages, got {count}")
    print(f"ok {CLIENT}: produced and consumed {n} messages, per-key order kept", flush=True)


def produce_range(start, end):
    s = Sender()
    for i in range(start, end):
        s.send(f"k{i % 31}".encode(), str(i).encode())
    s.flush()


def group(n):
    create_topic(6)
    produce_range(0, n)
    gid = f"{TOPIC}-group"
    seen, lock, stop = [], threading.Lock(), threading.Event()
    commit_failures = [0]
    state = {}

    def worker(name, rate_limited):
        r = Reader(gid, False)
        try:
            while not stop.is_set():
                batch = r.poll(max_records=200, timeout=0.2)
                if batch:
                    try:
                        r.commit()
                    except Exception as e:  # a commit refused during a rebalance: redelivery allowed
                        print(f"{name}: commit failed: {e}", flush=True)
                        commit_failures[0] += 1
                    with lock:
                        seen.extend(int(v) for _, _, v in batch)
                        state[name + "_count"] = state.get(name + "_count", 0) + len(batch)
                state[name] = r.assignment()
                if rate_limited:
                    time.sleep(0.1)
        finally:
            r.close()

    a = threading.Thread(target=worker, args=("A", True))
    a.start()
    deadline = time.time() + 60
    while state.get("A_count", 0) < n // 10 and time.time() < deadline:
        time.sleep(0.05)
    if state.get("A_count", 0) < n // 10:
        fail(f"consumer A read {state.get('A_count', 0)} messages in 60 s")
    b = threading.Thread(target=worker, args=("B", True))
    b.start()
    # Wait for the rebalance: both members hold partitions, six in all, none twice.
    while time.time() < deadline:
        pa, pb = state.get("A", []), state.get("B", [])
        if pa and pb and sorted(pa + pb) == list(range(6)):
            break
        time.sleep(0.05)
    else:
        fail(f"no rebalance to two members within 60 s: A={state.get('A')} B={state.get('B')}")
    while time.time() < deadline + 60:
        with lock:
            if len(set(seen)) == n:
                break
        time.sleep(0.05)
    time.sleep(1)  # repeats, if any, arrive now
    stop.set()
    a.join()
    b.join()
    distinct = set(seen)
    if distinct != set(range(n)):
        fail(f"gaps: {n - len(distinct & set(range(n)))} of {n} messages never consumed")
    repeats = len(seen) - len(distinct)
    if repeats and not commit_failures[0]:
        fail(f"{repeats} messages consumed twice although every commit succeeded")
    if not state.get("B_count"):
        fail("consumer B joined late but never got a message")
    # A restarted member resumes from the committed offsets: exactly the new messages.
    produce_range(n, n + n // 2)
    r = Reader(gid, False)
    got, deadline = [], time.time() + 60
    while len(got) < n // 2 and time.time() < deadline:
        got.extend(int(v) for _, _, v in r.poll())
    got.extend(int(v) for _, _, v in r.poll(timeout=2.0))
    r.close()
    if sorted(got) != list(range(n, n + n // 2)):
        old = [v for v in got if v < n]
        fail(f"restart: expected exactly {n // 2} new messages, got {len(got)} ({len(old)} from before the commits)")
    print(f"ok {CLIENT}: group of two on 6 partitions, A={state['A_count']} B={state['B_count']} messages, "
          f"{repeats} repeats after {commit_failures[0]} refused commits; restart resumed at the commits", flush=True)


def produce_acked():
    create_topic(3, {"flush.messages": "1"})
    out = sys.stdout

    def acked(v):
        out.write(f"acked {v.decode()}\n")
        out.flush()

    s = Sender(on_ack=acked)
    i = 0
    while True:
        s.send(f"k{i % 31}".encode(), str(i).encode())
        i += 1
        if i % 200 == 0:
            time.sleep(0.01)  # keep the run long enough to be killed in the middle


def verify_acked(path):
    acked = set()
    with open(path) as f:
        for line in f:
            if line.startswith("acked "):
                acked.add(int(line.split()[1]))
    if not acked:
        fail("no message was acknowledged before the kill")
    r = Reader(f"{TOPIC}-verify", False)
    found, deadline, idle = set(), time.time() + 60, 0
    while time.time() < deadline and idle < 3:
        batch = r.poll(timeout=1.0)
        idle = 0 if batch else idle + 1
        found.update(int(v) for _, _, v in batch)
    r.close()
    missing = acked - found
    if missing:
        fail(f"{len(missing)} of {len(acked)} acknowledged messages lost, e.g. {sorted(missing)[:5]}")
    print(f"ok {CLIENT}: all {len(acked)} acknowledged messages survived SIGKILL ({len(found)} stored)", flush=True)


def produce_n(n):
    create_topic(3, {"flush.messages": "1"})
    out = sys.stdout

    def acked(v):
        out.write(f"acked {v.decode()}\n")
        out.flush()

    s = Sender(on_ack=acked)
    for i in range(n):
        s.send(f"k{i % 31}".encode(), str(i).encode())
        if i % 200 == 0:
            time.sleep(0.01)  # long enough a run for the broker to be killed and restarted in it
    s.flush()
    if s.failed:
        fail(f"{len(s.failed)} messages failed, e.g. {s.failed[0]}")
    print(f"ok {CLIENT}: produced {n} messages, all acknowledged", flush=True)


def produce_compressed(codec, n):
    create_topic(2)
    s = Sender(compression=codec)
    for i in range(n):
        s.send(f"k{i % 31}".encode(), str(i).encode())
    s.flush()
    print(f"ok {CLIENT}: produced {n} messages with compression.type={codec}", flush=True)


def verify_exact(n):
    r = Reader(f"{TOPIC}-exact", False)
    counts, deadline, idle = {}, time.time() + 60, 0
    while time.time() < deadline and idle < 3:
        batch = r.poll(timeout=1.0)
        idle = 0 if batch else idle + 1
        for _, _, v in batch:
            counts[int(v)] = counts.get(int(v), 0) + 1
    r.close()
    missing = [i for i in range(n) if i not in counts]
    twice = sorted(i for i, c in counts.items() if c > 1)
    if missing or twice:
        fail(f"{len(missing)} missing (e.g. {missing[:5]}), {len(twice)} stored more than once (e.g. {twice[:5]})")
    print(f"ok {CLIENT}: each of the {n} messages stored exactly once", flush=True)


def admin():
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions
    create_topic(2, {"retention.ms": "3600000"})
    a = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in a.create_partitions([NewPartitions(TOPIC, 4)]).values():
        f.result()
    parts = len(a.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
    if parts != 4:
        fail(f"create_partitions: {parts} partitions, want 4")
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)

    def configs():
        return {k: v.value for k, v in a.describe_configs([res])[res].result().items()}

    got = configs()
    if got.get("retention.ms") != "3600000" or got.get("cleanup.policy") != "delete":
        fail(f"describe_configs: {got}")
    entry = ConfigEntry("retention.ms", "7200000",
                        incremental_operation=AlterConfigOpType.SET)
    alter = ConfigResource(ConfigResource.Type.TOPIC, TOPIC, incremental_configs=[entry])
    for f in a.incremental_alter_configs([alter]).values():
        f.result()
    if configs().get("retention.ms") != "7200000":
        fail(f"incremental_alter_configs not seen: {configs()}")
    cluster = a.describe_cluster().result()
    if len(cluster.nodes) != 1:
        fail(f"describe_cluster: {cluster.nodes}")
    print(f"ok {CLIENT}: create_partitions to 4, describe_configs, incremental_alter_configs, describe_cluster", flush=True)


def offset_delete():
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata
    create_topic(2)
    a = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    group = f"{TOPIC}-g"
    tps = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    a.alter_group_offsets(group, {tp: OffsetAndMetadata(0, "", -1) for tp in tps})
    errors = a.delete_group_offsets(group, [tps[0]])
    if any(e.__name__ != "NoError" for e in errors.values()):
        fail(f"delete_group_offsets: {errors}")
    left = {(tp.partition, om.offset) for tp, om in a.list_group_offsets({group: None})[group].items()}
    a.close()
    if left != {(1, 0)}:
        fail(f"after deleting partition 0's offset the group has {left}, want {{(1, 0)}}")
    print(f"ok {CLIENT}: delete_group_offsets (OffsetDelete) dropped one of two committed offsets", flush=True)


def list_offsets():
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    create_topic(1)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "enable.idempotence": True})
    for i, ts in enumerate([1000, 5000, 3000, 7000, 2000]):
        p.produce(TOPIC, value=str(i).encode(), partition=0, timestamp=ts)
    if p.flush(30) != 0:
        fail("produce did not finish")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    tp = TopicPartition(TOPIC, 0)
    got = {}
    for name, spec in [("max", OffsetSpec.max_timestamp()), ("earliest", OffsetSpec.earliest()),
                       ("latest", OffsetSpec.latest()), ("at 2500", OffsetSpec.for_timestamp(2500))]:
        info = admin.list_offsets({tp: spec})[tp].result()
        got[name] = (info.offset, info.timestamp)
    want = {"max": (3, 7000), "earliest": (0, -1), "latest": (5, -1), "at 2500": (1, 5000)}
    if got != want:
        fail(f"list_offsets: got {got}, want {want}")
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{TOPIC}-times"})
    found = [c.offsets_for_times([TopicPartition(TOPIC, 0, ts)], 10)[0].offset for ts in (4000, 6000, 9000)]
    c.close()
    if found != [1, 3, -1]:
        fail(f"offsets_for_times(4000, 6000, 9000): {found}, want [1, 3, -1]")
    print(f"ok {CLIENT}: ListOffsets max timestamp, earliest, latest and by timestamp: {got}", flush=True)


def delete_records():
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    create_topic(2)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    for i in range(100):
        p.produce(TOPIC, value=str(i).encode(), partition=0)
    if p.flush(30) != 0:
        fail("produce did not finish")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    tp = TopicPartition(TOPIC, 0, 40)
    low = admin.delete_records([tp])[tp].result().low_watermark
    if low != 40:
        fail(f"delete_records low watermark {low}, want 40")
    earliest = admin.list_offsets({TopicPartition(TOPIC, 0): OffsetSpec.earliest()})
    first = earliest[TopicPartition(TOPIC, 0)].result().offset
    if first != 40:
        fail(f"earliest offset after delete_records: {first}, want 40")
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{TOPIC}-after",
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(TOPIC, 0, -2)])
    got = []
    for _ in range(30):
        for m in c.consume(num_messages=1000, timeout=1.0):
            if m.error():
                fail(f"consume: {m.error()}")
            got.append(m.offset())
        if len(got) >= 60:
            break
    c.close()
    if got != list(range(40, 100)):
        fail(f"read offsets {got[:5]}..{got[-5:]} ({len(got)}), want 40..99")
    print(f"ok {CLIENT}: delete_records to 40, earliest 40, consumer reads 40..99", flush=True)


if SCENARIO == "roundtrip":
    roundtrip(int(ARGS[0]))
elif SCENARIO == "group":
    group(int(ARGS[0]))
elif SCENARIO == "produce-acked":
    produce_acked()
elif SCENARIO == "verify-acked":
    verify_acked(ARGS[0])
elif SCENARIO == "produce-n":
    produce_n(int(ARGS[0]))
elif SCENARIO == "verify-exact":
    verify_exact(int(ARGS[0]))
elif SCENARIO == "produce-compressed":
    produce_compressed(ARGS[0], int(ARGS[1]))
elif SCENARIO == "admin":
    admin()
elif SCENARIO == "offset-delete":
    offset_delete()
elif SCENARIO == "list-offsets":
    list_offsets()
elif SCENARIO == "delete-records":
    delete_records()
else:
    fail(f"unknown scenario {SCENARIO}")
