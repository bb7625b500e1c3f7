"""Hub-ready artifacts (cards, fp16 variant, upload, Bridges by Hub id) and the inference
conventions users bring from diffusers (device, dtype, sizes, config keys, flag names)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import run_cli
from crossdistill.denoisers import load_denoiser
from crossdistill.distill.config import DistillConfig, ExportConfig, FakeConfig, TeacherConfig
from crossdistill.distill.run import distill
from crossdistill.errors import CrossdistillError
from crossdistill.train import TrainConfig

PROMPTS = ["a red circle", "a dog", "a blue square"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


cli = run_cli   # in this process: the exit status and output a user sees, without a new interpreter


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def student_run(tiny_pair, tmp_path_factory):
    run = tmp_path_factory.mktemp("hub") / "my-student"
    cfg = DistillConfig(student=str(tiny_pair / "student"), teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip")],
                       fake=FakeConfig(updates=1), export=ExportConfig(fp16_variant=True),
                       train=TrainConfig(steps=2, batch=4, log_every=1, report_to="none"))
    distill(cfg, run, PROMPTS, progress=False)
    return run


def test_exported_student_has_a_card_and_no_second_unet(student_run):
    folder = student_run / "student"
    assert not (folder / "unet.safetensors").exists()     # the UNet is in unet/ only, unless export.unet_file
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert "crossdistill" in meta["tags"] and meta["license"] == "other"   # unknown bases: their terms apply
    assert "# my-student:" in card and "StableDiffusionPipeline.from_pretrained" in card
    assert "num_inference_steps=1" in card and str(student_run.parent) not in card.split("## Measured")[0]
    assert "train/z_std" in card and "bridge_dir: roundtrip" in card          # metrics and the config


def test_fp16_variant_loads_in_vanilla_diffusers(student_run):
    from diffusers import StableDiffusionPipeline

    folder = student_run / "student"
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    pipe = StableDiffusionPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16)
    full = StableDiffusionPipeline.from_pretrained(folder)
    for name in ("unet", "vae", "text_encoder"):
        half = dict(getattr(pipe, name).named_parameters())
        for k, v in getattr(full, name).named_parameters():
            assert half[k].dtype == torch.float16 and torch.equal(half[k], v.half()), (name, k)


def test_card_records_eval_metrics(student_run, tmp_path):
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(student_run / "student", folder)
    (tmp_path / "metrics.json").write_text(json.dumps({"adherence": {"all": 0.5}, "fid": 12.5, "failures": {
        "color": {"red": 3}}, "folder": "x"}))
    r = cli("card", folder, "--metrics", tmp_path / "metrics.json")
    assert r.returncode == 0, r.stderr
    card = (folder / "README.md").read_text()
    assert "| adherence/all | 0.5 |" in card and "| fid | 12.5 |" in card and "| failures" not in card and "| folder" not in card


def test_push_uploads_the_folder_with_huggingface_hub(student_run, tmp_path, monkeypatch):
    """No network: the HfApi calls are recorded, not made."""
    import shutil

    import huggingface_hub

    from crossdistill.hub import push

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))

    folder = tmp_path / "student"
    shutil.copytree(student_run / "student", folder)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    url = push(folder, "me/shapes-one-step", private=True)
    assert url == "https://huggingface.co/me/shapes-one-step"
    (_, _), (_, repo, kw), (_, up) = calls
    assert repo == "me/shapes-one-step" and kw == {"repo_type": "model", "private": True, "exist_ok": True}
    assert up["folder_path"] == str(folder) and up["repo_id"] == "me/shapes-one-step" and ".*" in up["ignore_patterns"]
    assert 'from_pretrained("me/shapes-one-step"' in (folder / "README.md").read_text()   # the card names the repo
    with pytest.raises(CrossdistillError, match="owner/name"):
        push(folder, "no-slash")
    (folder / "unet" / "extra.bin").write_bytes(b"x")
    with pytest.raises(CrossdistillError, match="pickle"):
        push(folder, "me/x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (folder / "unet" / "extra.bin").unlink()
    with pytest.raises(CrossdistillError, match="HF_HUB_OFFLINE"):
        push(folder, "me/x")


def test_bridge_has_a_card_and_loads_by_hub_id(tiny_pair, tmp_path, monkeypatch):
    import huggingface_hub

    from crossdistill.bridge.stage1 import BridgeTrainConfig, train_bridge
    from crossdistill.data.sources import DataConfig
    from crossdistill.distill.teachers import make_bridge

    cfg = BridgeTrainConfig(teacher=str(tiny_pair / "teacher"), student=str(tiny_pair / "student"),
                       data=DataConfig(images=8, domain="shapes"),
                       train=TrainConfig(steps=1, batch=4, report_to="none"))
    train_bridge(cfg, tmp_path / "b1", progress=False)
    folder = tmp_path / "b1" / "bridge"
    card = (folder / "README.md").read_text()
    assert front_matter(card)["library_name"] == "crossdistill" and "# b1-bridge:" in card
    assert "train/rec" in card or "train/loss" in card
    asked = []

    def fake_download(repo_id, allow_patterns=None, local_files_only=None, **kw):
        asked.append((repo_id, tuple(allow_patterns), local_files_only))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    student, teacher = load_denoiser(tiny_pair / "student"), load_denoiser(tiny_pair / "teacher")
    bridge = make_bridge("someone/tiny-bridge", student, teacher)
    assert asked == [("someone/tiny-bridge", ("bridge.json", "projector.safetensors", "README.md"), True)]
    assert bridge.projector is not None
    monkeypatch.undo()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(CrossdistillError, match="not in the local Hugging Face cache"):
        make_bridge("someone/not-cached", student, teacher)


# -- inference where users run it ---------------------------------------------------------------

def test_device_and_dtype_reach_every_model(tiny_pair, tmp_path):
    from crossdistill.generate import GenerateConfig, generate

    seen = {}
    import crossdistill.generate as g

    real = g.load_denoiser

    def spy(source, dtype=None, device=None, **kw):
        den = real(source, dtype=dtype, device=device, **kw)
        seen[str(source)] = {str(p.dtype) for _, m in den.modules() for p in m.parameters()} | \
            {str(p.device) for _, m in den.modules() for p in m.parameters()}
        return den

    g.load_denoiser = spy
    try:
        generate(GenerateConfig(str(tiny_pair / "teacher"), ["a dog"], tmp_path / "g", steps=2, device="cpu",
                                dtype="bf16", height=48, width=32), progress=False)
    finally:
        g.load_denoiser = real
    assert seen[str(tiny_pair / "teacher")] == {"torch.bfloat16", "cpu"}   # every component, text encoders too
    row = json.loads((tmp_path / "g" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["dtype"] == "bfloat16" and (row["height"], row["width"]) == (48, 32)
    from PIL import Image

    assert Image.open(tmp_path / "g" / row["file"]).size == (32, 48)


def test_pick_device_and_dtype():
    from crossdistill.runtime import pick_device, pick_dtype

    assert pick_device("cpu").type == "cpu" and pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16 and pick_dtype("bf16", None) == torch.bfloat16
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(CrossdistillError, match="no CUDA device"):
            pick_device("cuda")
    with pytest.raises(CrossdistillError, match="must be auto, cpu, cuda"):
        pick_device("gpu0")
    with pytest.raises(CrossdistillError, match="allowed: auto, bf16, fp16, fp32"):
        pick_dtype("fp8", torch.device("cpu"))


def test_bad_device_is_one_line_on_every_command(tiny_pair, tmp_path):
    for args in (["generate", "--model", tiny_pair / "student", "--prompt", "a dog", "--out", tmp_path / "g"],
                 ["eval", "--model", tiny_pair / "student", "--prompts-file", "configs/shapes_prompts.txt",
                  "--out", tmp_path / "e"],
                 ["bench", "--model", f"s={tiny_pair / 'student'}"]):
        r = cli(*args, "--device", "tpu")
        assert r.returncode == 2 and r.stderr.strip().startswith("error: --device must be") and \
            len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_bench_takes_device_dtype_and_size(tiny_pair):
    from crossdistill.eval.bench import bench

    rows = bench({"s": str(tiny_pair / "student")}, (1,), 1, device="cpu", dtype=torch.bfloat16, height=48, width=32)
    assert rows["s"]["dtype"] == "bfloat16" and (rows["s"]["height"], rows["s"]["width"]) == (48, 32)


# -- config conventions -------------------------------------------------------------------------

def test_set_takes_several_overrides_and_yaml_floats(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("student: s\nteachers: [{model: t}]\nlr: 1e-4\nfake:\n  lr: 3e-5\n")   # YAML 1.1: strings
    r = cli("distill", cfg, "--dry-run", "--set", "teachers.0.guidance=2.5", "train.steps=7", "ema=5e-1",
            "--set", "lr=2e-4")
    assert r.returncode == 0, r.stderr
    d = yaml.safe_load(r.stdout)
    assert (d["lr"], d["fake"]["lr"], d["teachers"][0]["guidance"], d["train"]["steps"], d["ema"]) == \
        (2e-4, 3e-5, 2.5, 7, 0.5)


def test_config_keys_lists_every_key_with_help():
    from crossdistill.bridge.stage1 import BridgeTrainConfig
    from crossdistill.config import config_keys

    for cls in (BridgeTrainConfig, DistillConfig):
        rows = config_keys(cls)
        missing = [k for k, _, _, h in rows if not h]
        assert not missing, f"keys without a help comment: {missing}"
    r = cli("config", "keys", "distill_shapes")
    assert r.returncode == 0 and "manifold.weight" in r.stdout and "train.report_to" in r.stdout
    assert "tuple[float, float]" in r.stdout
    r = cli("config", "keys", "nope")
    assert r.returncode == 2 and "give a stage (bridge, distill)" in r.stderr


def test_architecture_presets_are_not_models(tmp_path):
    r = cli("generate", "--model", "sd15", "--prompt", "a dog", "--out", tmp_path / "g")
    assert r.returncode == 2 and "architecture preset" in r.stderr and "stable-diffusion-v1-5/" in r.stderr
    assert "architecture only" in cli("presets").stdout


# -- trackers -----------------------------------------------------------------------------------

def test_report_to_tensorboard_and_none(tiny_pair, tmp_path):
    from crossdistill.train.loop import trackers

    base = dict(student=str(tiny_pair / "student"), teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip")],
                fake=FakeConfig(updates=1))
    for report, run in (("tensorboard", "tb"), ("none", "quiet")):
        distill(DistillConfig(**base, train=TrainConfig(steps=2, batch=4, log_every=1, sample_every=2,
                                                        report_to=report)), tmp_path / run, PROMPTS, progress=False)
    events = list((tmp_path / "tb" / "logs").rglob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "dmd" in acc.Tags()["scalars"] and "samples" in acc.Tags()["images"]
    assert not (tmp_path / "quiet" / "logs").exists() or not any((tmp_path / "quiet" / "logs").rglob("events*"))
    with pytest.raises(CrossdistillError, match="allowed: all, none, tensorboard, wandb"):
        trackers("mlflow")
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(CrossdistillError, match="needs the wandb package"):
            trackers("wandb")


def test_bench_without_models_times_the_shapes_teacher(tmp_path):
    """No --model: the shapes Teacher against the demo's Students, or the Student base when
    there is no demo here."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "crossdistill.cli", "bench", "--batch-size", "1", "--repeats", "1",
                        "--threads", "1", "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert set(rows) == {"teacher", "student-base"} and rows["teacher"]["model"] == "shapes-teacher"
    assert rows["teacher"]["speedup_b1"] == 1.0 and rows["teacher"]["device"] == "cpu"


def test_app_draws_the_typed_prompt_in_a_browser(student_run, tiny_pair, tmp_path):
    """`crossdistill app` in a subprocess; headless Chromium loads its page, a prompt is typed
    one key at a time (an input event per key), and the image the page shows is the one
    `crossdistill generate` makes for that prompt and seed."""
    import re
    import shutil
    import urllib.request

    import numpy as np
    from PIL import Image

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: `make test` installs it (Debian package `chromium`)"
    folder = student_run / "student"
    server = subprocess.Popen([sys.executable, "-m", "crossdistill.cli", "app", "--model", str(folder), "--port", "0",
                               "--threads", "1"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = re.search(r"http://\S+/", line).group(0)
        assert "<button id='teacher-button'>" in urllib.request.urlopen(url).read().decode()   # its Teacher, from the card
        prompt = "a red circle"
        probe = tmp_path / "probe.html"   # the served page, its requests sent to the server, plus a typist
        probe.write_text(urllib.request.urlopen(url).read().decode().replace(
            "<head>", f"<head><base href='{url}'>").replace("</body>", """<script>
          const box = document.getElementById('prompt'), img = document.getElementById('student');
          let typed = 0, loads = 0;
          img.addEventListener('load', () => { loads++; if (box.value === %s)
            document.body.setAttribute('data-probe', `loads=${loads} w=${img.naturalWidth} src=${img.src}`); });
          function key() { if (typed < %s.length) { box.value += %s[typed++];
            box.dispatchEvent(new Event('input')); setTimeout(key, 150); } }
          key();</script></body>""" % (json.dumps(prompt), json.dumps(prompt), json.dumps(prompt))))
        dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        m = re.search(r'data-probe="loads=(\d+) w=(\d+) src=([^"]+)"', dom)
        assert m, dom[-1500:]
        loads, width, src = int(m.group(1)), int(m.group(2)), m.group(3).replace("&amp;", "&")
        assert loads >= 2 and width == 32 and "prompt=a%20red%20circle&" in src   # drawn as typed, then the whole prompt
        shown = np.asarray(Image.open(urllib.request.urlopen(src)).convert("RGB"))
        bad = urllib.request.Request(url + "image?model=nope&prompt=x")
        try:
            urllib.request.urlopen(bad)
            raise AssertionError("an unknown model must be refused")
        except urllib.error.HTTPError as e:
            assert e.code == 400 and "unknown model" in e.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
    r = cli("generate", "--model", folder, "--prompt", prompt, "--seed", "0", "--threads", "1", "--out", tmp_path / "gen")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(shown, np.asarray(Image.open(tmp_path / "gen" / "00000.png").convert("RGB")))


def test_app_under_load_from_a_browser_answers_every_bad_request_with_a_4xx(student_run, tmp_path):
    """Headless Chromium fires 50 requests at once at `crossdistill app`: valid prompts,
    over-long and empty prompts, non-UTF-8 and malformed query strings, an over-long URL, an
    unknown path. Each valid one gets its PNG; each bad one a 4xx and a message saying what
    is wrong; the server answers a valid request afterwards (it did not die)."""
    import html
    import re
    import shutil
    import urllib.request

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: `make test` installs it (Debian package `chromium`)"
    server = subprocess.Popen([sys.executable, "-m", "crossdistill.cli", "app", "--model", str(student_run / "student"),
                               "--port", "0", "--threads", "1"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    cases = ([("image?prompt=a%20red%20circle&seed=" + str(i), 200, "image/png") for i in range(20)]
             + [("image?prompt=" + "a" * 400, 400, "1..300 characters")] * 5
             + [("image?prompt=&seed=1", 400, "1..300 characters")] * 3
             + [("image?seed=2", 400, "1..300 characters")] * 2
             + [("image?prompt=%ff%fe%fd", 400, "not UTF-8")] * 5
             + [("image?prompt=x&seed=abc", 400, "the seed must be an integer"),
                ("image?prompt=x&seed=-1", 400, "the seed must be an integer"),
                ("image?prompt=x&seed=99999999999999999999999", 400, "0..2^63-1"),
                ("image?%%%=%&&=", 400, "1..300 characters"),
                ("image?model=nope&prompt=x", 400, "unknown model 'nope'"),
                ("image?prompt=%20%20%09", 400, "1..300 characters"),
                ("nowhere", 404, "not found: /nowhere"),
                ("image?prompt=x&seed=1.5", 400, "the seed must be an integer")]
             + [("image?prompt=" + "b" * 70000, 414, "")] * 7)
    assert len(cases) == 50
    try:
        url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
        probe = tmp_path / "load.html"
        probe.write_text("""<html><body><pre id='out'></pre><script>
          Promise.all(%s.map(u => fetch('%s' + u).then(async r => [r.status,
              r.headers.get('content-type').startsWith('image/') ? r.headers.get('content-type') : await r.text()])
            .catch(e => [0, String(e)])))
          .then(rows => { document.getElementById('out').textContent = JSON.stringify(rows); });
          </script></body></html>""" % (json.dumps([c[0] for c in cases]), url))
        dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--disable-web-security", f"--user-data-dir={tmp_path / 'chromium'}",
                              "--virtual-time-budget=60000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=180).stdout
        m = re.search(r"<pre id=\"out\">(.*?)</pre>", dom, re.S)
        assert m and m.group(1), dom[-1500:]
        rows = json.loads(html.unescape(m.group(1)))
        for (path, code, said), (status, body) in zip(cases, rows):
            assert status == code and said in body, (path[:60], status, body[:200])
        assert urllib.request.urlopen(url + "image?prompt=a%20red%20circle&seed=7").status == 200   # still serving
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_push_command_offline_is_one_line(student_run):
    r = cli("push", student_run / "student", "me/x")
    assert r.returncode == 2 and r.stderr.strip() == "error: HF_HUB_OFFLINE is set: pushing needs the network (unset it)"
