"""Re-apply mutants by hand, in one process (torch and the oracles imported once).

    PYTHONPATH=src:tests python tests/mutants/handmut_batch.py MUTANTS.json -- PYTEST_ARGS...

MUTANTS.json: ``[[file, line, old, new, nth, label], ...]`` (e.g. from ``detection_mutants.py``). For each:
replace the ``nth`` occurrence of ``old`` on ``line`` by ``new``, write the file with a fresh mtime and no
bytecode, drop ``vislearn.*`` and the test modules from ``sys.modules``, run ``pytest.main(-x -q PYTEST_ARGS)``,
restore the file; print KILLED or SURVIVED.
"""

import contextlib
import importlib
import io
import json
import os
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


def _run(tests: list[str]) -> tuple[int, str]:
    for name in [m for m in sys.modules if m.startswith(("vislearn", "test_", "conftest"))]:
        del sys.modules[name]
    importlib.invalidate_caches()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *tests])
    return int(rc), (buf.getvalue().strip().splitlines() or [""])[-1]


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    with open(argv[0]) as f:
        mutants = json.load(f)
    tests = argv[sep + 1:]
    print("BASELINE", *_run(tests), flush=True)
    for path, line, old, new, nth, label in mutants:
        with open(path) as f:
            src = f.read()
        lines = src.splitlines(keepends=True)
        text, pos = lines[line - 1], -1
        for _ in range(nth):
            pos = text.find(old, pos + 1)
        if pos < 0:
            print("NOTFOUND", path, line, repr(old), flush=True)
            continue
        lines[line - 1] = text[:pos] + new + text[pos + len(old):]
        try:
            _write(path, "".join(lines))
            rc, tail = _run(tests)
        finally:
            _write(path, src)
        verdict = "KILLED  " if rc else "SURVIVED"
        print(verdict, f"{os.path.basename(path)}:{line} {old!r}->{new!r} {label} [{tail}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
