"""The offline ``cpython`` corpus: CPython's standard-library sources and its pydoc topics.

About 10 MB of text that every machine with Python has, 20x the ``pydoc`` corpus, so a
12-block language model has enough to learn from without a download. What it holds (ours):

- every ``.py`` file under the running interpreter's standard-library folder
  (``sysconfig.get_paths()["stdlib"]``), in sorted order of their POSIX relative paths, each
  preceded by a ``# Lib/<path>`` line;
- **left out**: test suites (any folder named ``test``, ``tests`` or ``idle_test``: long
  fixtures and generated data, not library code), ``site-packages``/``dist-packages`` (not the
  standard library), ``encodings/`` (1.4 MB of generated codec tables) and ``pydoc_data/``
  (added as text instead, below);
- then the ``pydoc`` corpus (``pydoc_data.topics`` joined in sorted topic order).

The text depends on the Python version (3.11.7 here: 10.4 MB); :func:`corpus_description`
records the version and the file count next to a model trained on it.
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

EXCLUDED_FOLDERS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})
EXCLUDED_TOP = frozenset({"encodings", "pydoc_data"})


def stdlib_folder() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def cpython_source_files(root: Path | None = None) -> list[Path]:
    """The standard-library ``.py`` files the corpus holds, in corpus order."""
    root = root or stdlib_folder()
    if not root.is_dir():
        raise FileNotFoundError(f"the standard-library folder {root} does not exist; the "
                                f"'cpython' corpus needs CPython's Lib sources installed")
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if parts[0] in EXCLUDED_TOP or EXCLUDED_FOLDERS.intersection(parts[:-1]):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def pydoc_text() -> str:
    """CPython's ``pydoc_data.topics``, in key order (the corpus ``pydoc``)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def cpython_documents(root: Path | None = None) -> list[str]:
    """The corpus as documents (one per source file, the pydoc topics last)."""
    root = root or stdlib_folder()
    docs = []
    for path in cpython_source_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(f"# Lib/{path.relative_to(root).as_posix()}\n{text}")
    docs.append(pydoc_text())
    return docs


def cpython_text(root: Path | None = None) -> str:
    """The whole corpus: its documents joined by blank lines."""
    return "\n\n".join(cpython_documents(root))


def corpus_description(root: Path | None = None) -> dict:
    """What the corpus was built from (stored with models trained on it)."""
    return {"python": sys.version.split()[0], "stdlib": str(root or stdlib_folder()),
            "files": len(cpython_source_files(root)),
            "excluded": sorted(EXCLUDED_FOLDERS | EXCLUDED_TOP)}
