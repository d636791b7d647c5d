"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order, as one script, in a fresh process in an empty folder
(so a later block may use what an earlier one defined, and files they write land nowhere
else), with a timeout. The only blocks left out are those whose first line is a marker
comment, visible to the reader, naming what the machine lacks: ``# needs: gpu`` or
``# needs: mpi``; each is reported here as a skipped test naming its file and line.
Other fences (bash, text) are not Python and are not run.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
                                   if f.endswith(".md"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"#\s*needs:\s*(gpu|mpi)\b")
NEEDS = {"gpu": "needs a GPU", "mpi": "needs an MPI launch (mpiexec)"}
TIMEOUT = 240


def python_blocks(path):
    """(first line number, code, what it needs or None) of each ```python block in ``path``."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in FENCE.finditer(text):
        code = m.group(1)
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        need = MARKER.match(first)
        out.append((text.count("\n", 0, m.start()) + 2, code, need.group(1) if need else None))
    return out


def script(path, blocks):
    """The runnable blocks joined into one script; each starts with a comment naming where it
    comes from, so that a traceback points at the document's line."""
    parts = []
    for line, code, need in blocks:
        if need is None:
            parts.append(f"# --- {path}, block at line {line} ---\n{code}")
    return "\n".join(parts)


def test_the_documents_have_python_blocks_and_only_known_markers():
    """The scan finds the blocks (a broken fence pattern would make every test below pass
    by running nothing), and a marker-like comment that is not one of the two is an error."""
    counts = {path: len(python_blocks(path)) for path in DOC_FILES}
    assert counts["README.md"] >= 1 and sum(counts.values()) >= 8, counts
    assert {"README.md", "docs/training.md", "docs/sklearn.md"} <= set(RUNNABLE), RUNNABLE
    for path in DOC_FILES:
        for line, code, need in python_blocks(path):
            first = code.lstrip().splitlines()[0]
            if "needs:" in first:
                assert need is not None, f"{path}:{line}: unknown marker {first!r} (use '# needs: gpu' or 'mpi')"


RUNNABLE = [path for path in DOC_FILES if script(path, python_blocks(path))]


# docs/backends.md lists every backend: its script builds them all, JAX included (~0.5 GB)
@pytest.mark.parametrize("path", [pytest.param(path, marks=pytest.mark.jax_child)
                                  if path == "docs/backends.md" else path for path in RUNNABLE])
def test_every_python_block_runs(path, tmp_path):
    runnable = script(path, python_blocks(path))
    source = tmp_path / "blocks.py"
    source.write_text(runnable, encoding="utf-8")
    paths = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(source)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{path}: a Python block failed\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"


SKIPPED = [(path, line, need) for path in DOC_FILES for line, _, need in python_blocks(path) if need]


@pytest.mark.parametrize("path,line,need", SKIPPED, ids=[f"{p}:{n}" for p, n, _ in SKIPPED])
def test_marked_blocks_are_reported_as_skipped(path, line, need):
    pytest.skip(f"{path}, block at line {line}: marked '# needs: {need}' ({NEEDS[need]}); shown, not run")
