#!/bin/bash
# Run the stage-2 A/B rows of a queue file two at a time, one thread each (2-core machine).
# Each line of QUEUE: NAME CONFIG [key=value ...]  (same budget: --steps, 90 prompts x 4 images)
#   bash benchmarks/ab_queue.sh QUEUE STEPS LOG
set -u
QUEUE=$1; STEPS=${2:-300}; LOG=${3:-runs/ab/results.jsonl}
cd "$(dirname "$0")/.."
mkdir -p "$(dirname "$LOG")"
run() {
  local name=$1 config=$2; shift 2
  local sets=(); for kv in "$@"; do sets+=("$kv"); done
  .venv/bin/python benchmarks/distill_curve.py --name "$name" --config "$config" --root runs/ab --log "$LOG" \
    --steps $STEPS --n-per-prompt 4 --threads 1 --set "${sets[@]}" > "runs/ab/$name.log" 2>&1
}
while read -r line; do
  [ -z "$line" ] && continue; [[ "$line" == \#* ]] && continue
  while [ "$(pgrep -fc "benchmarks/distill_curve.py")" -ge 2 ]; do sleep 5; done   # two at a time, machine-wide
  run $line &
  sleep 2
done < "$QUEUE"
wait
