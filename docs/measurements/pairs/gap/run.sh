#!/bin/sh
# Issue 33: why does the shipped preset distill_pairs not reproduce its documented 0.732?
# Each check prints the last history line of two runs that must agree if the named
# difference does not matter. Run from the repository root after `make venv`.
set -e
export OMP_NUM_THREADS=1
B=.venv/bin/crossdistill
last() { tail -1 "$1/history.jsonl"; }
R=runs/gap; mkdir -p $R
rm -rf $R/p1a $R/p1b $R/sa $R/sb $R/c1   # trained afresh (--overwrite would resume a run folder)

# 1. Code and Bridge: the committed uniform-time row `pairs-cross-s0` (300 steps, trained
#    through runs/demo-pairs/bridge/bridge on the revision before the preset existed),
#    rerun on this revision through the shipped pairs-bridge.
rm -rf $R/cur-pairs-cross-s0   # trained afresh
.venv/bin/python benchmarks/distill_curve.py --name cur-pairs-cross-s0 --config distill_pairs \
  --set t_first.steps=0 train.checkpoint_every=50 train.sample_every=100 train.seed=0 --steps 300 \
  --root $R --log $R/results.jsonl
python3 - <<'PY'
import json
old = json.loads(open("docs/measurements/pairs/two_phase/results.jsonl").readline())
new = [json.loads(l) for l in open("runs/gap/results.jsonl") if '"cur-pairs-cross-s0"' in l][-1]
for k in ("adherence", "clean", "fid", "diagnostics"):
    print(k, "committed:", old[k], "\n", k, "now:      ", new[k])
PY

# 2. Phase 1: t_first (steps 0-1299 at [0.85, 0.98]) against a run whose whole range is
#    [0.85, 0.98] (the committed seed-0 row's first 1300 steps), 20 steps each.
$B distill distill_pairs --out $R/p1a --threads 1 --overwrite --set train.steps=20 train.checkpoint_every=10 train.sample_every=0
$B distill distill_pairs --out $R/p1b --threads 1 --overwrite --set train.steps=20 train.checkpoint_every=10 train.sample_every=0 \
  t_first.steps=0 "t_range=[0.85,0.98]"
last $R/p1a; last $R/p1b

# 3. The stitch: phase 1 as its own run, stopped at its checkpoint, resumed with the whole
#    range (how the committed seed-0 row was made) against t_first in one run (the preset).
$B distill distill_pairs --out $R/sa --threads 1 --overwrite --set train.steps=40 train.checkpoint_every=10 \
  train.sample_every=0 t_first.steps=20
$B distill distill_pairs --out $R/sb --threads 1 --overwrite --set train.steps=20 train.checkpoint_every=10 \
  train.sample_every=0 t_first.steps=0 "t_range=[0.85,0.98]"
$B distill distill_pairs --out $R/sb --threads 1 --set train.steps=40 train.checkpoint_every=10 \
  train.sample_every=0 t_first.steps=0
last $R/sa; last $R/sb

# 4. Cadence: checkpoints every 7 steps and sample grids every 5 against run 2a.
$B distill distill_pairs --out $R/c1 --threads 1 --overwrite --set train.steps=20 train.checkpoint_every=7 train.sample_every=5
last $R/c1; last $R/p1a
