"""End-to-end smoke tests of every CLI command: the demos in a subprocess, as a user runs
them (one per world); the other commands through `main()` in this process (`run_cli`: the
same exit status and output, without a new interpreter importing torch each time)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from crossdistill.denoisers import build_denoiser

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def run(*args, ok=True, process=False):
    """`crossdistill ARGS`; `process`: in a subprocess, as a user runs it."""
    p = subprocess.run([sys.executable, "-m", "crossdistill.cli", *map(str, args)], env=ENV, capture_output=True,
                       text=True, timeout=600) if process else run_cli(*args)
    if ok:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_presets_lists_families():
    out = run("presets").stdout
    for name in ("tiny-sd15", "sd35-large", "flux-dev", "shapes-teacher"):
        assert name in out


def test_shapes_export(tmp_path):
    run("shapes", "export", "--n", "5", "--size", "64", "--out", tmp_path / "ex")
    rows = (tmp_path / "ex" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 5 and json.loads(rows[0])["seed"] == 0


def test_bad_input_is_one_line_exit_2(tmp_path):
    p = run("shapes", "export", "--n", "5", "--size", "48", "--out", tmp_path / "ex", ok=False)
    assert p.returncode == 2 and p.stderr.strip() == "error: --size must be 64 or 32, got 48"
    p = run("generate", "--model", tmp_path / "missing", "--prompt", "a cat", "--out", tmp_path / "g", ok=False)
    assert p.returncode == 2 and "model folder not found" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny-sd15"
    build_denoiser("tiny-sd15", seed=0).save_pretrained(path)
    return path


def test_generate_is_deterministic(tmp_path, tiny_model):
    args = ["generate", "--model", tiny_model, "--prompt", "a red circle", "--prompt", "a dog",
            "--n-per-prompt", "2", "--steps", "3", "--seed", "7"]
    run(*args, "--out", tmp_path / "a", "--batch-size", "4")
    run(*args, "--out", tmp_path / "b", "--batch-size", "1")   # batching must not matter
    ra = [json.loads(x) for x in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in ra] == [7, 8, 9, 10] and ra[2]["prompt"] == "a dog"
    for r in ra:
        assert (tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()


def test_generate_refuses_foreign_out_dir(tmp_path, tiny_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    p = run("generate", "--model", tiny_model, "--prompt", "a cat", "--steps", "2", "--out", out, ok=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_prompts_file_errors(tmp_path, tiny_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    p = run("generate", "--model", tiny_model, "--prompts-file", empty, "--out", tmp_path / "o", ok=False)
    assert p.returncode == 2 and "has no prompts" in p.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a red \xff circle\n")
    p = run("generate", "--model", tiny_model, "--prompts-file", bad, "--out", tmp_path / "o", ok=False)
    assert p.returncode == 2 and "not UTF-8" in p.stderr


def test_bridge_train_dry_run_and_config_errors(tmp_path):
    out = run("bridge", "train", "bridge_shapes", "--dry-run", "--set", "train.steps=7").stdout
    assert "steps: 7" in out and "kind: bridge" in out
    p = run("bridge", "train", "bridge_shapes", "--dry-run", "--set", "lr=-1", ok=False)
    assert p.returncode == 2 and "lr must be in (0, 1]" in p.stderr
    p = run("bridge", "train", "bridge_shapes", "--dry-run", "--set", "train.stpes=3", ok=False)
    assert "unknown config key 'train.stpes' (did you mean 'steps'?)" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    p = run("bridge", "train", bad, "--dry-run", ok=False)
    assert p.returncode == 2 and "malformed YAML" in p.stderr and "line" in p.stderr
    p = run("bridge", "train", "bridge_shapes", "--dry-run", "--set", "train.steps=abc", ok=False)
    assert "config key 'train.steps' must be int, got 'abc'" in p.stderr


def test_bridge_train_and_eval_end_to_end(tmp_path, tiny_pair):
    root = tiny_pair
    common = ["--set", f"teacher={root / 'teacher'}", "--set", f"student={root / 'student'}"]
    data = ["--set", "data.images=16", "--set", "data.shard_size=8"]
    out = run("bridge", "bank", "bridge_shapes", "--out", tmp_path / "run", *common, *data,
              "--threads", "1").stdout                                  # the data step alone
    assert "bank of 16 pairs (2 shards)" in out
    stamp = [p.stat().st_mtime_ns for p in sorted((tmp_path / "run" / "bank").glob("shard-*"))]
    run("bridge", "train", "bridge_shapes", "--out", tmp_path / "run", *common, *data,
        "--set", "train.steps=3", "--set", "train.batch=4", "--threads", "1")
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "run" / "bank").glob("shard-*"))] == stamp   # reused
    assert (tmp_path / "run" / "bridge" / "projector.safetensors").exists()
    p = run("bridge", "train", "bridge_shapes", "--out", tmp_path / "run", *common,
            "--set", "data.images=24", "--set", "data.shard_size=8", "--set", "train.steps=4", ok=False)
    assert "bank" in p.stderr and "was built from other data or models (data.images, images differ)" in p.stderr
    assert (tmp_path / "run" / "config.json").exists() and (tmp_path / "run" / "ckpt-0000003").exists()
    out = run("bridge", "eval", tmp_path / "run", "--teacher", root / "teacher", "--student", root / "student",
              "--images", "8", "--domain", "shapes", "--out", tmp_path / "t.json", "--threads", "1").stdout
    rows = json.loads((tmp_path / "t.json").read_text())
    assert set(rows) == {"run", "round-trip"} and rows["run"]["latent_mse"] > 0
    assert "round-trip" in out


def test_shapes_pretrain_quick_all_stages(tmp_path):
    out = tmp_path / "pt"
    run("shapes", "pretrain", "--out", out, "--quick", "--threads", "1")
    for stage in ("vae-student", "vae-teacher", "teacher", "student-base", "classifier", "vae-shapes-teacher-flux",
                  "shapes-teacher-flux"):   # the last two: the second Teacher's (Flux family)
        log = json.loads((out / stage / "train_log.json").read_text())
        assert log["stage"] == stage and log["wall_time_s"] > 0
    assert (out / "teacher" / "model_index.json").exists()
    again = run("shapes", "pretrain", "--out", out, "--quick", "--threads", "1").stdout
    assert "all stages done" in again   # rerun: finished stages are not redone


def test_demo_pairs_smoke(tmp_path):
    """`demo --domain pairs`: world II's models, prompts and judge end to end, with the
    seeded attention-fidelity ablation (`--full --train-seeds 2 --bridge-seeds`); a
    folder holding another domain's demo is refused."""
    out = tmp_path / "demo-pairs"
    run("demo", "--domain", "pairs", "--out", out, "--n-prompts", "2", "--n-per-prompt", "1", "--bridge-steps", "2",
        "--bridge-images", "16", "--distill-steps", "2", "--threads", "1", "--full", "--train-seeds", "2",
        "--bridge-seeds", "--bench-repeats", "1", process=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["domain"] == "pairs" and m["prompts"] == 2
    assert {"colors", "shapes", "relation", "no_extra", "all"} == set(m["generations"]["cross-space one-step"]
                                                                      ["adherence"])
    rows = [json.loads(x) for x in (out / "generations" / "cross-space" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red circle left of a green circle", "a red circle left of a purple square"]
    assert "domain pairs" in (out / "report.html").read_text()
    # every Bridge per seed, scored per object; each seed's Students distil through that seed's Bridges
    assert {"bridge", "bridge-seed1", "bridge-no-attn", "bridge-no-attn-seed1", "projector-only-seed1",
            "round-trip"} <= set(m["bridge"])
    assert all(0 <= r["object_attn_error"] <= 2 for r in m["bridge"].values())
    assert m["bridge_seeds"]["bridge-no-attn"]["object_attn_error"]["n"] == 2
    used = json.loads((out / "runs" / "cross-no-attn-seed1" / "config.json").read_text())["teachers"][0]["bridge_dir"]
    assert used.endswith("ablations/bridge-no-attn-seed1/bridge")
    diff = m["seeds"]["cross-space one-step - cross-space, Bridge without attention fidelity"]
    assert diff["all"]["n"] == 2 and {"colors", "relation", "clean", "fid"} <= set(diff)   # per attribute too
    assert "per-object attention error" in (out / "report.html").read_text()
    p = run("demo", "--domain", "shapes", "--out", out, "--n-prompts", "2", ok=False)
    assert p.returncode == 2 and "holds a demo of domain 'pairs'" in p.stderr
    # resuming with a setting the finished rows were not made with is refused, not mixed in
    p = run("demo", "--domain", "pairs", "--out", out, "--n-prompts", "2", "--n-per-prompt", "2", ok=False)
    assert p.returncode == 2 and "was made with n-per-prompt=1, not 2" in p.stderr
    p = run("demo", "--domain", "pairs", "--out", out, "--n-prompts", "2", "--n-per-prompt", "1", "--bridge-steps", "2",
            "--bridge-images", "16", "--distill-steps", "2", "--threads", "1", "--full", "--train-seeds", "2", ok=False)
    assert p.returncode == 2 and "was distilled through Bridge" in p.stderr and "bridge-seed1" in p.stderr


def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    args = ("demo", "--out", out, "--full", "--n-prompts", "2", "--n-per-prompt", "1", "--bridge-steps", "2",
            "--bridge-images", "16", "--distill-steps", "2", "--train-seeds", "2", "--threads", "1",
            "--bench-repeats", "1")
    run(*args, process=True)
    m = json.loads((out / "metrics.json").read_text())
    gap = m["seeds"]["cross-space one-step - shared-space one-step"]["all"]
    assert gap["n"] == 2 and len(gap["values"]) == 2 and gap["ci95"] >= 0     # two training seeds, paired
    assert (out / "students" / "cross-space-seed1" / "model_index.json").exists()
    assert not (out / "students" / "cross-space-no-manifold-seed1").exists()    # one seed beside the main pair
    assert m["config"]["methods"][1]["recipe"] == "cross"   # the shipped config's setting: the manifold term on
    assert json.loads((out / "runs" / "cross-space" / "config.json").read_text())["manifold"]["weight"] == 1.0
    assert {"z_std", "reencode_err", "clipped", "bridge_drift"} <= set(m["generations"]["cross-space one-step"]
                                                                        ["diagnostics"])
    assert 0 <= m["generations"]["cross-space one-step"]["fidelity"]["clean"] <= 1
    assert m["seeds"]["cross-space one-step"]["bg_level_sd"]["n"] == 2 and "bg level sd" in (out / "report.html").read_text()
    assert set(m["generations"]) == {"real renders", "Teacher (multi-step)", "Student base (multi-step)",
                                     "shared-space one-step", "cross-space one-step",
                                     "shared-space one-step, no manifold term",
                                     "cross-space one-step, no manifold term",
                                     "cross-space, round-trip Bridge", "cross-space, projector-only Bridge",
                                     "cross-space, Bridge without attention fidelity",
                                     "cross-space 2-step", "cross-space 4-step", "cross-space LoRA Student (rank 16)",
                                     "Teacher (multi-step, shapes-teacher-flux)",
                                     "cross-space, shapes-teacher-flux alone", "cross-space, 2 Teachers at once"}
    assert {"round-trip", "bridge", "bridge-no-attn", "projector-only", "bridge-shapes-teacher-flux"} <= set(m["bridge"])
    # the two-Teacher Student: each Teacher through its own Bridge, weighted alike
    two = json.loads((out / "runs" / "cross-2-teachers" / "config.json").read_text())["teachers"]
    assert [t["model"] for t in two] == ["shapes-teacher", "shapes-teacher-flux"] and [t["weight"] for t in two] == [0.5, 0.5]
    assert two[0]["bridge_dir"].endswith("/bridge/bridge") and two[1]["bridge_dir"].endswith(
        "ablations/bridge-shapes-teacher-flux/bridge") and all(t["guidance"] == 4.0 for t in two)
    assert json.loads((out / "ablations" / "bridge-shapes-teacher-flux" / "bridge" / "bridge.json").read_text()
                      )["teacher"] == "shapes-teacher-flux"
    assert m["latency"]["cross-space one-step"]["steps"] == 1 and m["latency"]["Teacher (multi-step)"]["steps"] > 1
    assert m["latency"]["cross-space 4-step"]["steps"] == 4
    assert [r["step"] for r in m["curves"]["cross-space one-step"]] == [1, 2]   # its sample grids, scored
    assert "Quality versus step" in (out / "report.html").read_text()
    assert (out / "students" / "cross-lora" / "pytorch_lora_weights.safetensors").exists()
    assert "<table class='results'>" in (out / "report.html").read_text()
    for name in ("cross-space", "shared-space"):   # exported pipelines that `generate --model` accepts
        assert (out / "students" / name / "model_index.json").exists()
    run("generate", "--model", out / "students" / "cross-space", "--prompt", "a red circle at the top",
        "--out", tmp_path / "gen", "--threads", "1")
    assert (tmp_path / "gen" / "00000.png").exists()
    assert (out / "bridge" / "bridge" / "bridge.json").exists() and (out / "demo.log").exists()

    times = (out / "stage_times.json").read_text()
    ckpts = {p: p.stat().st_mtime for p in out.rglob("state.safetensors")}
    run(*args)                                       # rerun: every stage is found finished
    assert (out / "stage_times.json").read_text() == times
    assert {p: p.stat().st_mtime for p in out.rglob("state.safetensors")} == ckpts
    assert json.loads((out / "metrics.json").read_text())["resumed"] is True


@pytest.mark.parametrize("cmd", ["", "presets", "shapes export", "shapes pretrain", "generate", "eval",
                                 "convert-inception", "bridge train", "bridge eval", "distill", "demo", "bench",
                                 "config keys", "card", "push", "app"])
def test_help_imports_no_heavy_library(cmd):
    """`--help` (and `--version`) stay fast: neither torch, diffusers nor transformers is imported."""
    code = ("import sys\nfrom crossdistill.cli import main\nsys.argv = ['crossdistill', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    for args in ([*cmd.split(), "--help"], ["--version"]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in p.stdout, (args, p.stdout[-500:], p.stderr[-500:])
