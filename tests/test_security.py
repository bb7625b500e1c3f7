"""Security: safetensors only, no torch.load / trust_remote_code, no network when offline."""

import re
import socket
from pathlib import Path

import pytest

from crossdistill.errors import CrossdistillError

SRC = Path(__file__).parent.parent / "src" / "crossdistill"


def test_source_never_unpickles_or_trusts_remote_code():
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        for m in re.finditer(r"torch\.load\((.*)", text):
            assert "weights_only=True" in m.group(1), f"{f}: torch.load without weights_only=True"
        assert not re.search(r"trust_remote_code\s*=\s*True", text), f"{f}: trust_remote_code=True"
        assert "pickle.load" not in text, f"{f}: pickle.load"
        assert not re.search(r"from\s+torch\s+import\s+[^\n]*\bload\b", text), f"{f}: from torch import load"
        assert not re.search(r"from\s+pickle\s+import|import\s+(c?pickle|dill|joblib)\b", text), f"{f}: pickle module"
        for m in re.finditer(r"\bnp\.load\((.*)", text):
            assert "allow_pickle=True" not in m.group(1), f"{f}: np.load(..., allow_pickle=True)"


def test_the_scan_catches_what_it_claims(tmp_path, monkeypatch):
    """The scan above, run on a planted file: each unpickling form is reported."""
    import test_security as me

    for bad in ("from torch import load\n", "import pickle\n", "x = np.load(f, allow_pickle=True)\n",
                "torch.load(f)\n", "pickle.load(f)\n"):
        (tmp_path / "bad.py").write_text(bad)
        monkeypatch.setattr(me, "SRC", tmp_path)
        with pytest.raises(AssertionError):
            me.test_source_never_unpickles_or_trusts_remote_code()


def test_offline_means_no_network(monkeypatch, tmp_path):
    from crossdistill.denoisers import build_denoiser, load_denoiser

    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network used while HF_HUB_OFFLINE=1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(CrossdistillError, match="offline"):
        load_denoiser("stabilityai/stable-diffusion-3.5-large")
    build_denoiser("tiny-sd15", seed=0).save_pretrained(tmp_path / "m")
    den = load_denoiser(tmp_path / "m")
    den.generate(["a red circle"], steps=2)
    assert attempts == []
