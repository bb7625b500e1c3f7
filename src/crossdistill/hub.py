"""Hub-ready artifacts: model cards, uploads, and Bridges named by Hub id.

Every exported Student (a diffusers folder) and every trained Bridge carries a
`README.md` whose YAML front matter the Hugging Face Hub reads (library, pipeline tag,
base model, licence, tags). The card is rendered from the folder's own metadata
(`crossdistill.json` of a Student, `bridge.json` of a Bridge), so `write_card` can
re-render it after metrics are added (`add_metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .errors import CrossdistillError, first_line
from .domains import example_prompt
from .hub_ids import HUB_ID, is_hub_id, offline

PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
BRIDGE_FILES = ("bridge.json", "projector.safetensors", "README.md")

# the published weights the project knows, and their licences (a Student or Bridge made from
# them is bound by these: the card says so)
LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
    "stabilityai/stable-diffusion-3.5-large": "other",        # Stability AI Community License
    "stabilityai/stable-diffusion-3.5-medium": "other",
    "black-forest-labs/FLUX.1-dev": "other",                   # FLUX.1 [dev] Non-Commercial License
    "black-forest-labs/FLUX.1-schnell": "apache-2.0",
}


def _shipped(name: str) -> bool:
    """A model trained by this project and shipped with it (a domain's artifact)."""
    from .artifacts import resolve

    return resolve(name) != name


def license_of(*models: str) -> str:
    """The licence a derived model inherits: the project's own for its shipped models,
    a known Hub model's, or "other" (read the base models' terms)."""
    found = {("apache-2.0" if _shipped(m) else LICENSES.get(m, "other")) for m in models}
    return found.pop() if len(found) == 1 else "other"


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump({k: v for k, v in meta.items() if v not in (None, [], "")},
                                    sort_keys=False) + "---\n"


def _metrics_table(metrics: dict) -> str:
    if not metrics:
        return "No evaluation recorded yet (`crossdistill eval`, then `crossdistill card FOLDER`).\n"
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return "| metric | value |\n|---|---|\n" + rows + "\n"


def _config_block(config: dict | None) -> str:
    if not config:
        return ""
    return ("<details><summary>Training config (resolved)</summary>\n\n```yaml\n"
            + yaml.safe_dump(config, sort_keys=False) + "```\n\n</details>\n")


def student_card(info: dict, name: str) -> str:
    """The card of an exported Student (a pipeline or a LoRA), from its crossdistill.json."""
    prov = info.get("provenance", {})
    teacher, student = prov.get("teacher", "?"), prov.get("student", "?")
    d = info.get("defaults", {})
    res = d.get("resolution", 512)
    domain = d.get("domain")
    prompt = example_prompt(domain)
    lora = info.get("lora")
    teachers = prov.get("teachers") or [teacher]   # several Teachers: all; `teacher` is the first
    base = [m for m in ((lora or {}).get("base", student), *teachers) if is_hub_id(m)]
    repo = prov.get("repo_id") or "PATH_OR_REPO_ID"
    steps = d.get("steps", 1)
    front = _front_matter({
        "library_name": "diffusers", "pipeline_tag": "text-to-image",
        "base_model": base[0] if base else None,
        "license": prov.get("license") or license_of(*teachers, student),
        "tags": ["crossdistill", "text-to-image", "one-step" if steps == 1 else "few-step", "distillation", "dmd2",
                 "cross-space-distillation"] + (["lora"] if lora else []) + ([f"domain:{domain}"] if domain else []),
    })
    if lora:
        sched = "DDIMScheduler" if steps == 1 else "LCMScheduler"
        load = (f"from diffusers import {sched}, StableDiffusionPipeline\n\n"
                f"pipe = StableDiffusionPipeline.from_pretrained(\"{lora['base']}\", torch_dtype=torch.float16)\n"
                f"pipe.load_lora_weights(\"{repo}\")   # rank {lora.get('rank')}, on the Student base\n"
                f"pipe.scheduler = {sched}.from_pretrained(\"{repo}\", subfolder=\"scheduler\")")
        what = f"a LoRA (rank {lora.get('rank')}) on `{lora['base']}`"
    else:
        load = ("from diffusers import StableDiffusionPipeline\n\n"
                f"pipe = StableDiffusionPipeline.from_pretrained(\"{repo}\", torch_dtype=torch.float16)")
        what = "a full Student pipeline"
    return front + f"""
# {name}: a {'one' if steps == 1 else steps}-step {info.get('family', 'sd15')} Student, distilled across latent spaces

Made with [crossdistill](https://github.com/crossdistill/crossdistill) (Cross-Space
Distillation): the Student keeps its own architecture and VAE and draws an image in
**{'one step' if steps == 1 else f'{steps} steps'}**; it learned from a Teacher whose latent space differs from its own,
through a Bridge (the Student's frozen VAE decoder plus a learned projector into the
Teacher's latent space) and DMD2-style distribution matching in the Teacher's space.
This folder is {what}.

- {'Teachers' if len(teachers) > 1 else 'Teacher'}: {', '.join(f'`{t}`' for t in teachers)}
- Student base: `{student}`
- Bridge: `{prov.get('bridge', '?')}`
- Inference: {steps} step{'s' if steps > 1 else ''}, guidance 0, {res} x {res} px (saved in `crossdistill.json` and the scheduler)

## Use it

```python
import torch
{load}
pipe = pipe.to("cuda")   # or "cpu" with torch_dtype=torch.float32
image = pipe("{prompt}", num_inference_steps={steps}, guidance_scale=0.0,
             height={res}, width={res}).images[0]
```
{'Half-precision weights are included: `variant="fp16"` loads them.' + chr(10) if prov.get('fp16_variant') else ''}
From the command line: `crossdistill generate --model {repo} --prompt "{prompt}" --out images/`.

## Measured

{_metrics_table(prov.get('metrics', {}))}
## Licence

Derived from the Teacher and the Student base: their licences' terms apply to this model.

{_config_block(prov.get('config'))}"""


def bridge_card(meta: dict, name: str) -> str:
    """The card of a trained Bridge, from its bridge.json."""
    teacher, student = meta.get("teacher", "?"), meta.get("student", "?")
    front = _front_matter({
        "library_name": "crossdistill",
        "license": meta.get("license") or license_of(teacher, student),
        "tags": ["crossdistill", "bridge", "latent-space", "cross-space-distillation"],
        "base_model": [m for m in (teacher, student) if is_hub_id(m)] or None,
    })
    cfg = meta.get("bridge", {})
    return front + f"""
# {name}: a Bridge from `{student}` latents to `{teacher}` latents

A crossdistill Bridge maps the Student's latents ({meta.get('student_resolution')} px images) into the
Teacher's latent space ({meta.get('teacher_resolution')} px): the Student's frozen VAE decoder, then a
small learned projector (`{cfg.get('kind', 'bridge')}`, width {cfg.get('width')}, depth {cfg.get('depth')}).
It is the reusable piece per VAE pair: any stage-2 run between these two models can use it.
Loading it for another pair is refused (both latent spaces' signatures are in `bridge.json`).

## Use it

```yaml
# stage-2 config (crossdistill distill CONFIG)
teacher: {teacher}
student: {student}
bridge_dir: {meta.get('repo_id') or 'PATH_OR_REPO_ID'}   # a folder or a Hub id
```

```python
from crossdistill.bridge.io import load_bridge
from crossdistill.denoisers import load_denoiser
from crossdistill.hub import fetch_bridge

bridge = load_bridge(fetch_bridge("PATH_OR_REPO_ID"), load_denoiser("{student}"), load_denoiser("{teacher}"))
```

## Measured

{_metrics_table(meta.get('metrics', {}))}
{_config_block(meta.get('config'))}"""


def write_card(folder: Path) -> Path:
    """Render FOLDER/README.md from the folder's metadata (a Student or a Bridge)."""
    from .denoisers.base import DEFAULTS_FILE

    folder = Path(folder)
    if (folder / "bridge.json").is_file():
        meta = json.loads((folder / "bridge.json").read_text())
        text = bridge_card(meta, meta.get("name") or folder.name)
    elif (folder / DEFAULTS_FILE).is_file() and ((folder / "model_index.json").is_file() or
                                                 "lora" in json.loads((folder / DEFAULTS_FILE).read_text())):
        info = json.loads((folder / DEFAULTS_FILE).read_text())
        text = student_card(info, info.get("provenance", {}).get("name") or folder.name)
    else:
        raise CrossdistillError(f"{folder} is neither an exported Student (model_index.json + crossdistill.json) "
                                f"nor a Bridge (bridge.json)")
    out = folder / "README.md"
    tmp = out.with_name(".README.md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def _update_meta(folder: Path, change) -> None:
    """Apply `change(holder)` to a Student's provenance (crossdistill.json) or a Bridge's
    bridge.json, written atomically, and re-render the card."""
    from .denoisers.base import DEFAULTS_FILE

    folder = Path(folder)
    path = folder / "bridge.json" if (folder / "bridge.json").is_file() else folder / DEFAULTS_FILE
    if not path.is_file():
        raise CrossdistillError(f"{folder} is neither an exported Student (model_index.json + crossdistill.json) "
                                f"nor a Bridge (bridge.json)")
    meta = json.loads(path.read_text())
    change(meta if path.name == "bridge.json" else meta.setdefault("provenance", {}))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path)
    write_card(folder)


def flat_metrics(rows: dict) -> dict:
    """An eval's metrics.json as card rows: numbers, one level of nesting as `a/b` (the
    per-attribute failure counts and lists left out)."""
    flat = {}
    for k, v in rows.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[k] = v
        elif isinstance(v, dict) and k != "failures":
            flat.update({f"{k}/{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
    return flat


def add_metrics(folder: Path, metrics: dict) -> None:
    """Record measured metrics in a Student's or Bridge's metadata and re-render its card."""
    _update_meta(folder, lambda m: m.setdefault("metrics", {}).update(metrics))


def fetch_bridge(spec: str) -> Path:
    """A Bridge folder from a shipped name, a local path or a Hub id (only bridge.json, projector.safetensors
    and the card are downloaded; HF_HUB_OFFLINE=1: the local cache only)."""
    from .artifacts import resolve

    path = Path(resolve(spec))   # a Bridge a domain ships (shapes-bridge), or a path
    if path.exists() or not is_hub_id(spec):
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=list(BRIDGE_FILES), local_files_only=offline()))
    except Exception as e:
        why = ("offline (HF_HUB_OFFLINE=1) and not in the local Hugging Face cache" if offline()
               else f"hub unreachable, unknown repo or gated ({type(e).__name__})")
        raise CrossdistillError(f"cannot get the Bridge {spec!r}: not a local folder; {why}") from None


def push(folder: Path, repo_id: str, private: bool = False, message: str | None = None,
         revision: str | None = None, token: str | None = None) -> str:
    """Upload an exported Student or a Bridge to the Hub (the card re-rendered with the
    repo id first); returns the repo's URL. Pickle files are refused, hidden files skipped."""
    folder = Path(folder)
    if not HUB_ID.fullmatch(repo_id):
        raise CrossdistillError(f"REPO_ID must look like owner/name, got {repo_id!r}")
    if not folder.is_dir():
        raise CrossdistillError(f"folder not found: {folder}")
    pickled = sorted(str(p.relative_to(folder)) for pat in PICKLES for p in folder.rglob(pat))
    if pickled:
        raise CrossdistillError(f"{folder} holds pickle files ({', '.join(pickled[:3])}); refused: safetensors only")
    if offline():
        raise CrossdistillError("HF_HUB_OFFLINE is set: pushing needs the network (unset it)")
    _update_meta(folder, lambda m: m.update(repo_id=repo_id))   # the card's snippets name the repo
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                          commit_message=message or f"Upload {folder.name} (crossdistill)",
                          ignore_patterns=[".*", "**/.*", *PICKLES])
    except Exception as e:
        raise CrossdistillError(f"upload of {folder} to {repo_id} failed: {first_line(e)}") from None
    return str(url)
