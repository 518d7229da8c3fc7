"""Re-apply mutants by hand, in one process (torch and the oracles imported once).

    PYTHONPATH=src:tests python tests/mutants/handmut_batch.py MUTANTS.json [--fresh] -- PYTEST_ARGS...

MUTANTS.json: ``[[file, line, old, new, nth, label], ...]`` (e.g. from ``detection_mutants.py``), or the
whole mutated files of ``gremlin_source.py`` (``[{"file", "source", "id", "line", "desc"}, ...]``). For each:
replace the ``nth`` occurrence of ``old`` on ``line`` by ``new`` (or take the mutated file), write the file
with a fresh mtime and no bytecode, drop ``vislearn.*`` and the test modules from ``sys.modules``, run
``pytest.main(-x -q PYTEST_ARGS)``, restore the file; print KILLED or SURVIVED.

In one process a test that is not repeatable there (the torchrun evaluation job of test_train_evaluation.py
fails from its second run on) reads as a kill: ``--fresh`` runs each mutant in a new pytest process
instead (slower by the imports), which is how every kill in tests/MUTANTS.md was confirmed.
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time

import pytest

sys.dont_write_bytecode = True
_stamp = [int(time.time()) + 100]


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    _stamp[0] += 2  # a new whole-second mtime each write: no cached bytecode of another version can match
    os.utime(path, (_stamp[0], _stamp[0]))


FRESH = False


def _run(tests: list[str]) -> tuple[int, str]:
    if FRESH:
        r = subprocess.run([sys.executable, "-B", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           capture_output=True, text=True)
        return r.returncode, (r.stdout.strip().splitlines() or [""])[-1]
    for name in [m for m in sys.modules if m.startswith(("vislearn", "test_", "conftest"))]:
        del sys.modules[name]
    importlib.invalidate_caches()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *tests])
    return int(rc), (buf.getvalue().strip().splitlines() or [""])[-1]


def _mutate(m: list | dict, src: str) -> tuple[int, str, str] | None:
    """(line, mutated source, label) of one mutant of either format; None if its ``old`` text is not there."""
    if isinstance(m, dict):
        return m["line"], m["source"], f"{m['id']} {m['desc']} {m['old']!r}->{m['new']!r}"
    _, line, old, new, nth, label = m
    lines = src.splitlines(keepends=True)
    text, pos = lines[line - 1], -1
    for _ in range(nth):
        pos = text.find(old, pos + 1)
    if pos < 0:
        return None
    lines[line - 1] = text[:pos] + new + text[pos + len(old):]
    return line, "".join(lines), f"{old!r}->{new!r} {label}"


def main(argv: list[str]) -> None:
    global FRESH
    sep = argv.index("--")
    options, tests = argv[:sep], argv[sep + 1:]
    FRESH = "--fresh" in options
    with open(options[0]) as f:
        mutants = json.load(f)
    print("BASELINE", *_run(tests), flush=True)
    for m in mutants:
        path = m["file"] if isinstance(m, dict) else m[0]
        with open(path) as f:
            src = f.read()
        mutant = _mutate(m, src)
        if mutant is None:
            print("NOTFOUND", path, m[1], repr(m[2]), flush=True)
            continue
        line, mutated, label = mutant
        try:
            _write(path, mutated)
            rc, tail = _run(tests)
        finally:
            _write(path, src)
        verdict = "KILLED  " if rc else "SURVIVED"
        print(verdict, f"{os.path.basename(path)}:{line} {label} [{tail}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
