"""confluent-kafka's idempotent producer against a broker whose data directory fills up.
Driven by tests/e2e/faults.rs.

usage: faults.py BOOTSTRAP TOPIC fill N
  Produces N numbered records ("0", "1", ...) to partition 0 with enable.idempotence and a
  short message.timeout.ms while the disk fills: some deliveries must fail (the broker answers
  KAFKA_STORAGE_ERROR until the records time out), and the partition, read while the disk is
  still full, must hold exactly the delivered records in the order sent: no record the producer
  was told failed, none lost that it was told was stored, and every record sent before the
  first failure stored. (librdkafka moves its idempotent producer to a new epoch after records
  time out and goes on with the next ones, which a partly freed disk may store.) Prints
  "ok fill K" (K delivered).
usage: faults.py BOOTSTRAP TOPIC resume K M
  After space was freed: a new idempotent producer delivers M more records ("r0".."r<M-1>")
  without error, and the partition holds the K records of the fill followed by them.
Prints "ok ..." and exits 0 on success; prints what differs and exits 1 otherwise."""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BOOTSTRAP, TOPIC, MODE = sys.argv[1:4]


def fail(msg):
    print(f"FAIL [faults] {msg}", flush=True)
    sys.exit(1)


def produce(values, timeout_ms):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True,
                  "message.timeout.ms": timeout_ms, "linger.ms": 5})
    delivered, errors, failed = [], [], []

    def on_delivery(err, msg):
        if err is None:
            delivered.append(msg.value().decode())
        else:
            errors.append(err)
            failed.append(msg.value().decode())

    for v in values:
        while True:
            try:
                p.produce(TOPIC, v.encode(), partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout_ms / 1000 + 60)
    if left:
        fail(f"{left} records neither delivered nor failed")
    return delivered, errors, failed


def read_all():
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "faults-reader",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    low, high = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
    got = []
    deadline = time.time() + 60
    while len(got) < high and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append(m.value().decode())
    c.close()
    return got


if MODE == "fill":
    n = int(sys.argv[4])
    values = [str(i) for i in range(n)]
    delivered, errors, failed = produce(values, 8000)
    if not errors:
        fail(f"all {n} records were delivered: the disk did not fill")
    first_failed = min(int(v) for v in failed)
    delivered = sorted(delivered, key=int)
    if delivered[:first_failed] != values[:first_failed]:
        fail(f"a record sent before the first failure ({first_failed}) was not delivered")
    stored = read_all()
    if stored != delivered:
        fail(f"the partition holds {len(stored)} records, {len(delivered)} were delivered; "
             f"first differences: {[(i, a, b) for i, (a, b) in enumerate(zip(stored, delivered)) if a != b][:3]}")
    kinds = sorted({e.name() for e in errors})
    print(f"ok fill {len(delivered)} delivered, {len(errors)} failed from record {first_failed} "
          f"on ({', '.join(kinds)})")
elif MODE == "resume":
    k, m = int(sys.argv[4]), int(sys.argv[5])
    values = [f"r{i}" for i in range(m)]
    before = read_all()
    if len(before) != k:
        fail(f"the partition holds {len(before)} records before the resume, {k} were delivered")
    delivered, errors, _ = produce(values, 30000)
    if errors:
        fail(f"{len(errors)} records failed after space was freed: {errors[0]}")
    stored = read_all()
    expected = before + values
    if stored != expected:
        fail(f"the partition holds {len(stored)} records, expected {len(expected)}")
    print(f"ok resume {len(stored)}")
else:
    fail(f"unknown mode {MODE}")
