"""README.md renders as intended: every section heading is a heading, not swallowed by a
code block left open (GitHub-style Markdown, parsed with markdown-it)."""

import re
from pathlib import Path

from markdown_it import MarkdownIt

README = Path(__file__).parent.parent / "README.md"


def headings(text: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(text)
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]


def test_every_heading_is_outside_code_blocks():
    text = README.read_text(encoding="utf-8")
    written = [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)
               if not m.group(1).startswith(("!", "-"))]
    fence_comments = set(re.findall(r"^# .*$", "\n".join(re.findall(r"```sh\n(.*?)```", text, flags=re.S)), re.M))
    expected = [h for h in written if f"# {h}" not in fence_comments]
    assert headings(text) == expected


def test_an_unclosed_fence_is_caught():
    broken = "# Title\n\n```sh\nmake demo\n``` trailing text\n\n## Section\n"
    assert headings(broken) == ["Title"]          # the section vanished into the code block


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_api_example_runs(tmp_path):
    """README's whole-method example, as written, at a tiny budget (steps and images cut)."""
    import subprocess
    import sys

    (block,) = [b for b in python_blocks(README.read_text(encoding="utf-8")) if "from crossdistill import" in b]
    code = (block.replace("runs/api", str(tmp_path / "api")).replace("train.steps=300", "train.steps=2")
            .replace("data.images=2000", "data.images=16"))
    code = "import torch\ntorch.set_num_threads(1)\n" + code.replace(
        '"train.steps=2"]', '"train.steps=2", "train.batch=4"]')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       cwd=README.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'all':" in r.stdout and (tmp_path / "api" / "distill" / "student" / "README.md").exists()
    assert len(list((tmp_path / "api" / "gen").glob("*.png"))) == 8
