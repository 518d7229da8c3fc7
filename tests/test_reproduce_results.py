"""``vislearn reproduce`` output files honour the umask (issue 16, item 5): JSON, the matplotlib PNG, README.md.

The writes are atomic (``vislearn.io``: a ``mkstemp`` file, 0600, renamed); a shared results folder
must still be readable to colleagues under the usual umask 022. A stand-in reproduction (one
matplotlib figure) runs through the real CLI path: ``reproduce NAME`` -> ``run_reproduction`` ->
``write_results_table``.
"""

import json
import os
import stat

import pytest

import vislearn.reproduce as rp
from vislearn.cli import main


def _fake_reproduction(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    return rp.Outcome(passed=True, numbers={"x": 1.0}, figure=fig)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_reproduce_outputs_follow_the_umask(tmp_path, monkeypatch, capsys, umask, expected):
    fake = rp.Reproduction("umask_probe", _fake_reproduction, "none", "a claim", "a criterion", (0,))
    monkeypatch.setattr(rp, "get_reproduction", lambda name: fake)
    out = tmp_path / "results"
    old = os.umask(umask)
    try:
        assert main(["reproduce", "umask_probe", "--results", str(out)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert written == {"umask_probe.json": expected, "umask_probe.png": expected, "README.md": expected}
    assert (out / "umask_probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "umask_probe.json").read_text())["passed"] is True
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind
