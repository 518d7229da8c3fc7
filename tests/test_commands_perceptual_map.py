"""``vislearn perceptual-map``: the figure it reports is the file it wrote."""

from __future__ import annotations

import json

from PIL import Image

from vislearn.cli import main


def test_out_without_extension_reports_the_png_it_wrote(tmp_path, capsys):
    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.new("RGB", (32, 32), (100, 120, 140)).save(ref)
    Image.new("RGB", (32, 32), (110, 120, 130)).save(dist)
    assert main(["perceptual-map", str(ref), str(dist), "--out", str(tmp_path / "map")]) == 0
    reported = json.loads(capsys.readouterr().out)["figure"]
    assert reported == str(tmp_path / "map.png")
    assert Image.open(reported).format == "PNG" and not (tmp_path / "map").exists()
    assert main(["perceptual-map", str(ref), str(dist), "--out", str(tmp_path / "map.xyz")]) == 2
    assert "unknown image extension '.xyz'" in capsys.readouterr().err
