#!/usr/bin/env bash
# The supervised example: a clean run, then the same run told to leave mid-way.
set -u
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

show() {  # show EXIT_STATUS: the code and the termination message supervise wrote
  echo "--> supervise exited $1; termination message:"
  python3 -m json.tool "$out/termination-log"
  echo
}

echo "== 1. a supervised training run that finishes"
supervise --termination-log "$out/termination-log" --event-log "$out/events.jsonl" \
  -- python examples/train.py --steps 200
show $?

echo "== 2. the same run, sent SIGTERM mid-way (what the kubelet does on eviction)"
supervise --termination-log "$out/termination-log" --event-log "$out/events.jsonl" \
  -- python examples/train.py --steps 2000 --step-time 0.01 > >(tee "$out/train.log") &
pid=$!
until grep -q '^step' "$out/train.log" 2>/dev/null; do sleep 0.1; done  # training is running
echo "--> kill -TERM supervise"
kill -TERM "$pid"
wait "$pid"
show $?
echo "Exit 85 (PREEMPTED) maps to podFailurePolicy Ignore: the Job reschedules the pod"
echo "without counting a failure. See \`supervise exit-codes\`."
