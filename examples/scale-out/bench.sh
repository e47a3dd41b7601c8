#!/usr/bin/env bash
# Scale-out figures of BENCHMARKS.md ("Several instances of a job"), on `runnel broker`:
#   1. throughput of the reference window job (examples/jobs/ride_hailing.toml) with 1, 2 and 4
#      instances (`runnel --bootstrap ... run --until-end`), next to one process with as many
#      worker threads as the instances have together;
#   2. failover: a 1,000,000-key aggregation (GROUP BY ts) on two instances, one SIGKILLed;
#      the time until the survivor processes the dead one's tasks, without and with a standby.
# Usage: examples/scale-out/bench.sh [EVENTS] [throughput,failover]   (needs `cargo build --release`)
set -euo pipefail
events=${1:-2000000}
parts=${2:-throughput,failover}
root=$(cd "$(dirname "$0")/../.." && pwd)
runnel=${RUNNEL:-${CARGO_TARGET_DIR:-$root/target}/release/runnel}
work=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
bootstrap=127.0.0.1:$port
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
now() { date +%s.%N; }

python3 "$root/../shared/bench/gen_events.py" --n "$events" --out "$work/events.jsonl" >/dev/null
"$runnel" --data-dir "$work/data" broker --listen "$bootstrap" --stats-interval 0s >"$work/broker.log" 2>&1 &
for _ in $(seq 50); do "$runnel" --bootstrap "$bootstrap" topics list >/dev/null 2>&1 && break; sleep 0.1; done
"$runnel" --bootstrap "$bootstrap" topics create rides --partitions 8 >/dev/null
"$runnel" --bootstrap "$bootstrap" produce rides --file "$work/events.jsonl" --key-field driver_id >/dev/null

# Runs `instances` instances of the window job (named `name`) with `threads` threads each,
# and prints the seconds until all of them ended.
window_run() {
    local name=$1 instances=$2 threads=$3
    sed "s/name = \"ride-hailing-sql\"/name = \"$name\"/" "$root/examples/jobs/ride_hailing.toml" >"$work/$name.toml"
    local start pids=()
    start=$(now)
    for i in $(seq "$instances"); do
        "$runnel" --bootstrap "$bootstrap" run "$work/$name.toml" --until-end --threads "$threads" \
            >/dev/null 2>"$work/$name-$i.log" &
        pids+=($!)
    done
    wait "${pids[@]}"
    echo "$(now) - $start" | bc
}

if [[ $parts == *throughput* ]]; then
echo "== throughput: $events events, 8 partitions, 24 tasks"
printf "%-28s %10s %14s\n" "run" "seconds" "events/s"
for n in 1 2 4; do
    s=$(window_run "scale-$n" "$n" 2)
    printf "%-28s %10.2f %14.0f\n" "$n instance(s) x 2 threads" "$s" "$(echo "$events / $s" | bc -l)"
    if [ "$n" -gt 1 ]; then
        s=$(window_run "threads-$n" 1 $((2 * n)))
        printf "%-28s %10.2f %14.0f\n" "1 process x $((2 * n)) threads" "$s" "$(echo "$events / $s" | bc -l)"
    fi
done
fi

# Failover: two instances of a 1M-key aggregation (one key per ms of event time).
failover() {
    local name=$1 standbys=$2
    sed -e "s/^name = \"per-ms\"/name = \"$name\"/" -e "s/^standby_replicas = 0/standby_replicas = $standbys/" \
        -e "s/^topic = \"per-ms\"/topic = \"$name-out\"/" "$root/examples/scale-out/per_ms.toml" >"$work/$name.toml"
    "$runnel" --bootstrap "$bootstrap" run "$work/$name.toml" >/dev/null 2>"$work/$name-a.log" &
    local a=$!
    "$runnel" --bootstrap "$bootstrap" run "$work/$name.toml" >/dev/null 2>"$work/$name-b.log" &
    local b=$!
    # Both hold tasks, then the input is consumed and the standbys caught up.
    until grep -q "2 instance" "$work/$name-a.log" && grep -q "2 instance" "$work/$name-b.log"; do sleep 0.2; done
    sleep 20
    if [ "$standbys" -gt 0 ]; then
        until grep -q "^standby copies" "$work/$name-b.log"; do sleep 0.2; done
    fi
    local before killed
    before=$(grep -c "^processing" "$work/$name-b.log")
    killed=$(now)
    kill -9 "$a"
    until [ "$(grep -c "^processing" "$work/$name-b.log")" -gt "$before" ]; do sleep 0.05; done
    local back line
    back=$(now)
    line=$(grep "^processing" "$work/$name-b.log" | tail -1)
    printf "%-22s %12.2f %20s %12s\n" "standby replicas: $standbys" "$(echo "$back - $killed" | bc)" \
        "$(echo "$line" | sed 's/.*) \(.*\) after.*/\1/')" "$(echo "$line" | sed 's/.*, \([0-9]*\) changelog.*/\1/')"
    kill "$b"; wait "$b" 2>/dev/null || true
}

[[ $parts == *failover* ]] || exit 0
echo "== failover: SIGKILL of one of two instances, 1,000,000-key store"
printf "%-22s %12s %20s %12s\n" "" "seconds" "of which restoring" "replayed"
failover "failover-0" 0
failover "failover-1" 1
