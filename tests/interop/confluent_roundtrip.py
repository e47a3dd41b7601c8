"""confluent-kafka (librdkafka) against a Kafka-compatible broker: create a topic, produce N keyed
messages with acks=all and idempotence, consume them back with a group, and check that exactly
the same messages came back with per-key order kept.

usage: confluent_roundtrip.py BOOTSTRAP TOPIC N
Prints "ok ..." and exits 0 on success; prints the first difference and exits 1 otherwise."""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
KEYS = 97

admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)]).values():
    f.result()

producer = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
})
failed = []


def delivered(err, msg):
    if err is not None:
        failed.append(err)


for i in range(n):
    key = f"k{i % KEYS}"
    while True:
        try:
            producer.produce(topic, key=key, value=f"{key}:{i}", on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    if i % 1000 == 0:
        producer.poll(0)
if producer.flush(60) != 0 or failed:
    print(f"produce failed: {failed[:3]}, unflushed left")
    sys.exit(1)

consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"{topic}-readers",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,
})
consumer.subscribe([topic])
got = {}
count = 0
deadline = time.time() + 120
while count < n and time.time() < deadline:
    for m in consumer.consume(num_messages=10000, timeout=1.0):
        if m.error():
            raise KafkaException(m.error())
        got.setdefault(m.key().decode(), []).append(int(m.value().decode().split(":")[1]))
        count += 1
consumer.close()

for k in range(KEYS):
    key = f"k{k}"
    want = list(range(k, n, KEYS))
    if got.get(key) != want:
        print(f"key {key}: expected {len(want)} values in order, got {len(got.get(key, []))}: {got.get(key, [])[:5]}...")
        sys.exit(1)
print(f"ok confluent-kafka produced and consumed {n} messages, per-key order kept")
