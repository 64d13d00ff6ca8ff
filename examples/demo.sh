#!/usr/bin/env bash
# The supervised example, end to end on a laptop (about a minute):
#   1. a GPU degrades mid-run (a fake-GPU scenario): supervise asks the trainer for a
#      checkpoint, the trainer commits it, supervise exits 83 (DEVICE_DEGRADED);
#   2. the "rescheduled pod" runs the same command: it resumes from that checkpoint and
#      finishes, exit 0.
# Everything it writes (checkpoints, termination messages, event logs) is kept for a look
# afterwards, in $SUPERVISE_DEMO_DIR if set (it must be empty or new), else a fresh temporary
# directory; the last lines say where. It exits 0 only if both runs end as described.
set -u
cd "$(dirname "$0")/.."
if [ -n "${SUPERVISE_DEMO_DIR:-}" ]; then
  work=$SUPERVISE_DEMO_DIR
  mkdir -p "$work" || exit 2
  if [ -n "$(ls -A "$work")" ]; then
    echo "demo: $work is not empty; a second demo there would resume the first" >&2
    exit 2
  fi
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/supervise-demo.XXXXXX") || exit 2
fi

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
  code=$?
  # `supervise explain` begins "CODE NAME ..."; keep the name, the code is printed already.
  echo "--> supervise exited $code ($(supervise explain "$code" | head -n 1 | cut -d ' ' -f 2))"
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
first=$code

echo "== committed checkpoints"
supervise ckpt ls "$work/checkpoints"
echo

echo "== 2. the replacement pod: same command, resumes from the last committed step"
run second
second=$code

echo "== kept in $work:"
echo "   checkpoints/                    the committed steps (supervise ckpt ls/verify)"
echo "   first.json, second.json         each run's termination message"
echo "   first.events, second.events     each run's event log (JSON lines)"
echo "   degrade.json                    the fake-GPU scenario the first run played"
[ "$first" -eq 83 ] && [ "$second" -eq 0 ]
