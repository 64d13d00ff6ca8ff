#!/usr/bin/env bash
# The supervised example, end to end on a laptop (about a minute):
#   1. a GPU degrades mid-run (a fake-GPU scenario): supervise asks the trainer for a
#      checkpoint, the trainer commits it, supervise exits 83 (DEVICE_DEGRADED);
#   2. the "rescheduled pod" runs the same command: it resumes from that checkpoint and
#      finishes, exit 0.
set -u
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/degrade.json" <<'JSON'
{"description": "GPU 0 starts HW thermal slowdown 8 s in",
 "gpus": 1,
 "timeline": [{"at": 8.0, "gpu": 0, "set": {"clock_event_reasons": 64, "temperature_c": 88}}]}
JSON

run() {  # run NAME [supervise flags...]: one supervised training run
  local name=$1
  shift
  supervise --checkpoint-dir "$work/checkpoints" --termination-log "$work/$name.json" \
    --event-log "$work/$name.events" "$@" \
    -- python examples/train.py --steps 400 --step-time 0.02
  local code=$?
  echo "--> supervise exited $code ($(supervise explain "$code" | head -n 1))"
  python3 - "$work/$name.json" <<'PY'
import json, sys
message = json.load(open(sys.argv[1]))
print(f"    reason: {message['reason']}")
for item in message["evidence"]:
    print(f"    evidence: {item['source']}/{item['kind']}: {item['summary']}")
PY
  echo
}

echo "== 1. training on a GPU that degrades 8 s in (--fake-gpus plays the fault)"
run first --fake-gpus "$work/degrade.json" --gpu-poll-interval 0.5

echo "== committed checkpoints"
supervise ckpt ls "$work/checkpoints"
echo

echo "== 2. the replacement pod: same command, resumes from the last committed step"
run second
