"""Every Python example of README.md and docs/*.md runs as written (the docs stay true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(path, i, code, id=f"{path.name}-{i}")
    for path in DOCS
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S))
]


def test_docs_have_examples():
    assert {b.values[0].name for b in BLOCKS} >= {"README.md", "completion.md", "deep_lora.md"}


@pytest.mark.parametrize(("path", "index", "code"), BLOCKS)
def test_example_runs(path, index, code, tmp_path, monkeypatch, request):
    if "movielens" in code:  # real data: found through $LOWDIM_DATA
        monkeypatch.setenv("LOWDIM_DATA", str(request.getfixturevalue("shared_data")))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{path.name}:example {index}", "exec"), {"__name__": "__readme__"})
