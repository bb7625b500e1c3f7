#!/bin/bash
# One-factor-at-a-time tuning around the base (lr 2e-4, the Teacher's own guidance, 2 fake
# updates), 300 generator steps, identical grids for both methods; guidance grid = 0.5x, 2x
# of each Teacher's sampling guidance (cross: 2.0; shared: 7.5).
cd /work/main
B=runs/demo/bridge/bridge
run() { .venv/bin/python benchmarks/distill_curve.py --log runs/curves/sweep.jsonl --steps 300 "$@"; }
for m in cross shared; do
  if [ $m = cross ]; then C="configs/distill_shapes.yaml"; S="bridge_dir=$B"; G0=2.0; GL=1.0; GH=4.0;
  else C="configs/distill_shapes_shared.yaml"; S=""; GL=3.75; GH=15.0; fi
  run --name $m-lr1e-4 --config $C --set $S fake.updates=2 lr=0.0001 fake.lr=0.0001
  run --name $m-lr5e-4 --config $C --set $S fake.updates=2 lr=0.0005 fake.lr=0.0005
  run --name $m-gl --config $C --set $S fake.updates=2 guidance=$GL
  run --name $m-gh --config $C --set $S fake.updates=2 guidance=$GH
  run --name $m-u1 --config $C --set $S fake.updates=1
done
