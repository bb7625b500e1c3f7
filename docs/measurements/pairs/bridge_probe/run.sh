#!/bin/sh
# Issue 33: does the preset's binding depend on the stage-1 Bridge draw? A fresh demo-recipe
# pairs Bridge (stage-1 seed 1), then the shipped preset distill_pairs through it (seed 0).
set -e
B=.venv/bin/crossdistill
$B bridge train bridge_shapes --out runs/pb-s1 --threads 1 --set teacher=pairs-teacher student=pairs-student-base \
  data.domain=pairs data.images=2000 train.steps=300 train.batch=32 train.seed=1 lr=0.001
$B distill distill_pairs --out runs/pairs-pb1-s0 --threads 1 --set teachers.0.bridge_dir=runs/pb-s1/bridge
