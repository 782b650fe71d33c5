"""The README's Python example runs as written (the front door must not rot)."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_python_examples_run(kdgm_cache, monkeypatch):
    monkeypatch.setenv("KDGM_CACHE_DIR", str(kdgm_cache))
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}  # one session, as a reader runs them: a later block may use an earlier one's imports
    for block in blocks:
        namespace.pop("model", None), namespace.pop("net", None)
        exec(compile(block, "README.md", "exec"), namespace)
        assert "net" in namespace or "model" in namespace
