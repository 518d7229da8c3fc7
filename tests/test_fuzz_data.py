"""Fuzzing the data readers (issue 16, item 2; issue 18, item 2).

Every reader under ``vislearn.data`` is fed random and malformed input: image bytes (random, truncated,
byte-flipped), COCO json, VOC XML, multi-label CSV, NUS-WIDE lists, TID2013/KADID/BAPPS files and
CUB/Cars/SOP lists. The contract: a valid result, or one ``UserError`` (never a bare IndexError,
KeyError, StopIteration ...). Paths inside dataset files that leave the dataset folder are refused;
pixel counts over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before decoding; 16-bit, 32-bit and float
images decode to their true values on [0, 1].

Budgets: ``tests/_fuzz.py`` (``VISLEARN_FUZZ_EXAMPLES`` for more).
"""

import io
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _fuzz import fuzz_settings
from vislearn.data.formats import CocoDetection, MultilabelCSV, load_image
from vislearn.data.iqa_sets import bapps_2afc, kadid10k, open_judgments, tid2013
from vislearn.data.nuswide import NUSWIDE
from vislearn.data.retrieval_sets import cars196, cub200, stanford_online_products
from vislearn.data.voc import VOCDetection
from vislearn.errors import UserError


def _png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _rgb(h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_img(path: Path, seed=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(*size, seed=seed)).save(path)


def _valid_or_user_error(fn, *args, **kwargs):
    """Call ``fn``; a ``UserError`` is the accepted failure, any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        assert str(e), "a UserError must say what is wrong"
        return None


def _touch_items(ds, n=3):
    """Read a few items: each is an item or a UserError (an image that does not decode)."""
    for i in range(min(len(ds), n)):
        _valid_or_user_error(ds.__getitem__, i)


# words a malformed file is made of: plausible tokens mixed with arbitrary text
_TOKENS = st.sampled_from(["0", "1", "-1", "2", "1e9", "nan", "inf", "a.png", "../x.png", "/etc/passwd", "", " ",
                           ",", "|", "\t", "\\", "images/a.png", "I01.BMP", "i01_01_1.bmp", "5.5", "\x00", "é",
                           "999999999999999999999", "٣"])
_LINE = st.lists(st.one_of(_TOKENS, st.text(max_size=8)), max_size=5).map(" ".join)
_TEXT = st.lists(_LINE, max_size=6).map("\n".join)


# ---------------------------------------------------------------------------------------- images

_ENCODED = {fmt: _png_bytes(_rgb(16, 16), fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")}


@fuzz_settings(40)
@given(fmt=st.sampled_from(sorted(_ENCODED)), cut=st.floats(0, 1), flips=st.lists(st.tuples(
    st.floats(0, 1), st.integers(0, 255)), max_size=4), tail=st.binary(max_size=64))
def test_image_decoding_truncated_and_flipped_bytes(fmt, cut, flips, tail):
    data = bytearray(_ENCODED[fmt][:max(1, int(len(_ENCODED[fmt]) * cut))])
    for pos, val in flips:
        data[int(pos * (len(data) - 1))] = val
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x.{fmt.lower()}"
        p.write_bytes(bytes(data) + tail)
        x = _valid_or_user_error(load_image, p)
    if x is not None:  # what decodes keeps the convention
        assert x.dtype == torch.float32 and x.ndim == 3 and x.shape[0] == 3
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


@fuzz_settings(30)
@given(magic=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                              b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b""]), body=st.binary(max_size=200))
def test_image_decoding_random_bytes(magic, body):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.png"
        p.write_bytes(magic + body)
        x = _valid_or_user_error(load_image, p)
    if x is not None:
        assert x.ndim == 3 and x.shape[0] == 3 and x.min() >= 0 and x.max() <= 1


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` (8-bit RGB) with one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is not None  # nothing in vislearn disabled Pillow's limit
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10^10 pixels, 30 GB decoded; 100 bytes on disk
    with pytest.raises(UserError, match=r"bomb\.png.*MAX_IMAGE_PIXELS"):
        load_image(bomb)
    # between one and two times the limit Pillow only warns; we refuse there too, before decoding
    limit = Image.MAX_IMAGE_PIXELS
    side = int((1.5 * limit) ** 0.5)
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(side, side))
    with pytest.raises(UserError, match="MAX_IMAGE_PIXELS"):
        load_image(big)


def test_pixel_limit_is_pillows_own(tmp_path, monkeypatch):
    _write_img(tmp_path / "a.png", size=(40, 50))  # 2,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(UserError, match="2000 pixels"):
        load_image(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert load_image(tmp_path / "a.png").shape == (3, 40, 50)


def test_no_source_disables_pillow_limits():
    import ast
    src = Path(__file__).resolve().parents[1] / "src"
    guarded = {"MAX_IMAGE_PIXELS", "LOAD_TRUNCATED_IMAGES"}
    for f in src.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                assert not (isinstance(t, ast.Attribute) and t.attr in guarded), f"{f}:{node.lineno} sets {t.attr}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and len(node.args) > 1:
                arg = node.args[1]
                assert not (isinstance(arg, ast.Constant) and arg.value in guarded), f"{f}:{node.lineno}"


# ------------------------------------------------------------------------------- high bit depth

def test_16bit_png_decodes_to_true_values(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    x = load_image(tmp_path / "g16.png")
    truth = torch.from_numpy(a.astype(np.float64) / 65535)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32
    torch.testing.assert_close(x.double(), truth.expand(3, -1, -1), atol=1e-7, rtol=0)
    assert abs(x.mean().item() - a.mean() / 65535) < 1e-6  # before the fix: 1.0 (every sample clipped to 255)
    # a dark 16-bit image (values < 256) is dark, not white
    Image.fromarray(np.full((4, 4), 100, np.uint16)).save(tmp_path / "dark.png")
    assert load_image(tmp_path / "dark.png").max().item() == pytest.approx(100 / 65535)


def test_16bit_tiff_and_32bit_integer_tiff(tmp_path):
    a16 = np.random.default_rng(1).integers(0, 65536, (8, 9), dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.tif")
    assert load_image(tmp_path / "g16.tif").mean().item() == pytest.approx(a16.mean() / 65535, abs=1e-6)
    a32 = np.random.default_rng(2).integers(0, 2**31 - 1, (8, 9), dtype=np.int32)
    Image.fromarray(a32).save(tmp_path / "g32.tif")  # signed 32-bit samples (SampleFormat 2)
    x = load_image(tmp_path / "g32.tif")
    torch.testing.assert_close(x[0].double(), torch.from_numpy(a32 / (2**31 - 1)), atol=1e-7, rtol=0)
    Image.fromarray(np.array([[-5, 3]], np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(UserError, match=r"neg\.tif.*negative"):
        load_image(tmp_path / "neg.tif")


def test_float_tiff_on_unit_scale_and_out_of_range(tmp_path):
    f = np.random.default_rng(3).random((6, 7)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    x = load_image(tmp_path / "f.tif")
    torch.testing.assert_close(x, torch.from_numpy(f).expand(3, -1, -1))
    Image.fromarray((f * 300).astype(np.float32)).save(tmp_path / "big.tif")
    with pytest.raises(UserError, match=r"big\.tif.*\[0, 1\]"):
        load_image(tmp_path / "big.tif")
    g = f.copy()
    g[0, 0] = np.nan
    Image.fromarray(g).save(tmp_path / "nan.tif")
    with pytest.raises(UserError, match="non-finite"):
        load_image(tmp_path / "nan.tif")


def test_8bit_modes_unchanged(tmp_path):
    a = _rgb(5, 6)
    Image.fromarray(a).save(tmp_path / "a.png")
    assert torch.equal(load_image(tmp_path / "a.png"), torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    p = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert torch.equal(load_image(tmp_path / "p.png"), torch.from_numpy(p).permute(2, 0, 1).float() / 255)


# ------------------------------------------------------------------------------------------- COCO

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) |
                     st.sampled_from(["a.png", "../out.png", "/etc/passwd", "x"]),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["id", "file_name", "name", "bbox", "image_id", "category_id",
                                          "iscrowd", "area", "width", "height", "images", "categories"]),
                         c, max_size=4), max_leaves=12)
_ANN = st.fixed_dictionaries({}, optional={"image_id": _JSON | st.integers(0, 2), "category_id": _JSON | st.just(1),
                                           "bbox": _JSON | st.lists(st.floats(-5, 50) | st.just(float("nan")),
                                                                    min_size=4, max_size=4),
                                           "iscrowd": _JSON, "area": _JSON})


@fuzz_settings(40)
@given(top=_JSON, images=st.lists(st.fixed_dictionaries(
    {}, optional={"id": st.integers(0, 2) | _JSON, "file_name": st.sampled_from(["a.png", "b.png"]) | _JSON,
                  "width": _JSON, "height": _JSON}), max_size=3),
    cats=st.lists(st.fixed_dictionaries({}, optional={"id": st.integers(1, 2) | _JSON, "name": _JSON}), max_size=3),
    anns=st.lists(_ANN, max_size=4) | _JSON, structured=st.booleans(), raw=st.binary(max_size=40))
def test_coco_json_malformed(top, images, cats, anns, structured, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "img" / "a.png")
        f = d / "ann.json"
        if structured:
            f.write_text(json.dumps({"images": images, "categories": cats, "annotations": anns}))
        else:
            f.write_bytes(json.dumps(top).encode() if raw == b"" else raw)
        ds = _valid_or_user_error(CocoDetection, f, d / "img")
        if ds is not None:
            for i in range(len(ds)):
                t = ds.target(i)
                assert t["boxes"].shape[1] == 4 and torch.isfinite(t["boxes"]).all()
            _touch_items(ds)


# -------------------------------------------------------------------------------------------- VOC

_XML_FIELD = st.one_of(_TOKENS, st.integers(-5, 60).map(str), st.text(max_size=6))


@fuzz_settings(30)
@given(fields=st.lists(st.tuples(_XML_FIELD, _XML_FIELD, _XML_FIELD, _XML_FIELD, _XML_FIELD), max_size=3),
       name=st.sampled_from(["dog", "cat", "<", "", "zebra"]), size=st.tuples(_XML_FIELD, _XML_FIELD),
       filename=st.sampled_from(["000001.jpg", "../x.jpg", "/etc/passwd", "", "missing.jpg"]),
       garbage=st.none() | st.binary(max_size=60), split=_TEXT)
def test_voc_xml_malformed(fields, name, size, filename, garbage, split):
    import xml.sax.saxutils as su
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for sub in ("Annotations", "ImageSets/Main"):
            (d / sub).mkdir(parents=True)
        _write_img(d / "JPEGImages" / "000001.jpg")
        objs = "".join(f"<object><name>{su.escape(name)}</name><difficult>{su.escape(df)}</difficult><bndbox>"
                       f"<xmin>{su.escape(a)}</xmin><ymin>{su.escape(b)}</ymin><xmax>{su.escape(c)}</xmax>"
                       f"<ymax>{su.escape(e)}</ymax></bndbox></object>" for a, b, c, e, df in fields)
        xml = (f"<annotation><filename>{su.escape(filename)}</filename><size><width>{su.escape(size[0])}</width>"
               f"<height>{su.escape(size[1])}</height></size>{objs}</annotation>")
        (d / "Annotations" / "000001.xml").write_bytes(garbage if garbage is not None else xml.encode())
        (d / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n" if garbage is None else split)
        ds = _valid_or_user_error(VOCDetection, d, classes=("dog", "cat"))
        if ds is not None:
            _touch_items(ds)


# -------------------------------------------------------------------------------------------- CSV

@fuzz_settings(30)
@given(text=_TEXT | st.lists(st.tuples(st.sampled_from(["a.png", "b.png", "../x.png", "", "/etc/passwd"]),
                                       st.text(max_size=10)), max_size=4).map(
    lambda rows: "\n".join(f"{p},{lab}" for p, lab in rows)), raw=st.none() | st.binary(max_size=40))
def test_multilabel_csv_malformed(text, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "a.png")
        _write_img(d / "b.png", seed=1)
        (d / "labels.csv").write_bytes(raw if raw is not None else text.encode())
        ds = _valid_or_user_error(MultilabelCSV, d / "labels.csv")
        if ds is not None:
            assert ds.targets.shape == (len(ds), len(ds.classes))
            _touch_items(ds)


# --------------------------------------------------------------------------------------- NUS-WIDE

@fuzz_settings(30)
@given(concepts=_TEXT, imagelist=_TEXT, labels=st.lists(_TEXT, max_size=3), plain=st.booleans())
def test_nuswide_lists_malformed(concepts, imagelist, labels, plain):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "ImageList").mkdir()
        lab = d / "Groundtruth" / "TrainTestLabels"
        lab.mkdir(parents=True)
        _write_img(d / "Flickr" / "sky" / "1.jpg")
        names = ["sky", "sea"] if plain else concepts.splitlines()
        (d / "Concepts81.txt").write_text("sky\nsea\n" if plain else concepts)
        (d / "ImageList" / "TrainImagelist.txt").write_text("sky\\1.jpg\n" + imagelist)
        for n, c in enumerate(names[:3]):
            if "/" in c or "\x00" in c or not c.strip():
                continue
            try:
                (lab / f"Labels_{c.strip()}_Train.txt").write_text(labels[n] if n < len(labels) else "1\n")
            except OSError:
                continue
        ds = _valid_or_user_error(NUSWIDE, d, "train")
        if ds is not None:
            assert ds.targets.shape == (len(ds), len(ds.classes))
            _touch_items(ds)


# ------------------------------------------------------------------------------ TID / KADID / BAPPS

@fuzz_settings(30)
@given(text=_TEXT | st.lists(st.tuples(st.sampled_from(["5.5", "x", "nan", "-1", "1e400"]), st.sampled_from(
    ["i01_01_1.bmp", "I01_01_1.BMP", "../i01_01_1.bmp", "i02_01_1.bmp", "i01"])), max_size=4).map(
    lambda rows: "\n".join(" ".join(r) for r in rows)), raw=st.none() | st.binary(max_size=40))
def test_tid2013_listing_malformed(text, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "reference_images" / "I01.BMP")
        _write_img(d / "distorted_images" / "i01_01_1.bmp", seed=1)
        (d / "mos_with_names.txt").write_bytes(raw if raw is not None else text.encode())
        ds = _valid_or_user_error(tid2013, d)
        if ds is not None:
            _touch_items(ds)


@fuzz_settings(30)
@given(header=st.sampled_from(["dist_img,ref_img,dmos,var", "dist_img,ref_img,dmos", "a,b", ""]),
       rows=st.lists(st.tuples(st.sampled_from(["I01_01_01.png", "../I01.png", "nope.png", ""]),
                               st.sampled_from(["I01.png", "x"]), st.sampled_from(["4.5", "nan", "", "a"])),
                     max_size=3), tail=_TEXT, raw=st.none() | st.binary(max_size=40))
def test_kadid_csv_malformed(header, rows, tail, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "images" / "I01.png")
        _write_img(d / "images" / "I01_01_01.png", seed=1)
        text = "\n".join([header, *(",".join(r) for r in rows), tail])
        (d / "dmos.csv").write_bytes(raw if raw is not None else text.encode())
        ds = _valid_or_user_error(kadid10k, d)
        if ds is not None:
            _touch_items(ds)


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


@fuzz_settings(30)
@given(judge=st.one_of(st.binary(max_size=80), st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                                       max_size=3).map(lambda v: _npy_bytes(np.array(v))),
                       st.just(_npy_bytes(np.array([{"a": 1}], dtype=object))),  # a pickled object array
                       st.just(_npy_bytes(np.array(["0.5"])))), cut=st.floats(0.2, 1))
def test_bapps_judge_files_malformed(judge, cut):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for k, s in enumerate(("ref", "p0", "p1")):
            _write_img(d / s / "000.png", seed=k)
        (d / "judge").mkdir()
        (d / "judge" / "000.npy").write_bytes(judge[:max(1, int(len(judge) * cut))])
        ds = _valid_or_user_error(bapps_2afc, d)
        if ds is not None:
            assert 0 <= float(ds.judges[0]) <= 1
            _touch_items(ds)


# ---------------------------------------------------------------------------------- CUB / Cars / SOP

@fuzz_settings(30)
@given(images=_TEXT | st.lists(st.tuples(st.sampled_from(["1", "2", "x", "-1"]), st.sampled_from(
    ["001.a/1.jpg", "../1.jpg", "/etc/passwd", "001.a/none.jpg"])), max_size=3).map(
    lambda r: "\n".join(" ".join(x) for x in r)), labels=_TEXT | st.just("1 1\n2 150\n"),
    classes=st.none() | _TEXT, split=st.sampled_from(["train", "test", "all"]))
def test_cub_lists_malformed(images, labels, classes, split):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "images" / "001.a" / "1.jpg")
        (d / "images.txt").write_text(images)
        (d / "image_class_labels.txt").write_text(labels)
        if classes is not None:
            (d / "classes.txt").write_text(classes)
        ds = _valid_or_user_error(cub200, d, split)
        if ds is not None:
            _touch_items(ds)


@fuzz_settings(30)
@given(text=_TEXT | st.lists(st.tuples(st.sampled_from(["1", "x"]), st.sampled_from(["1", "11319", "b", "-3"]),
                                       st.just("1"), st.sampled_from(["a/1.jpg", "../1.jpg", "/etc/passwd"])),
                             max_size=3).map(lambda r: "h h h h\n" + "\n".join(" ".join(x) for x in r)),
       raw=st.none() | st.binary(max_size=40))
def test_sop_lists_malformed(text, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "a" / "1.jpg")
        (d / "Ebay_train.txt").write_bytes(raw if raw is not None else text.encode())
        ds = _valid_or_user_error(stanford_online_products, d, "train")
        if ds is not None:
            _touch_items(ds)


@fuzz_settings(20)
@given(raw=st.binary(max_size=120), fields=st.sampled_from(["ok", "escape", "noclass", "badclass", "nostruct"]))
def test_cars_annotations_malformed(raw, fields):
    import scipy.io
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_img(d / "car_ims" / "000001.jpg")
        mat = d / "cars_annos.mat"
        if raw:
            mat.write_bytes(raw)
        else:
            dt = [("relative_im_path", "O"), ("class", "O")]
            rel = {"escape": "../000001.jpg"}.get(fields, "car_ims/000001.jpg")
            cls = {"badclass": "seven"}.get(fields, 1)
            if fields == "noclass":
                dt, row = [("relative_im_path", "O")], (rel,)
            else:
                row = (rel, cls)
            annos = np.array([row], dtype=dt) if fields != "nostruct" else np.array([1.0, 2.0])
            scipy.io.savemat(mat, {"annotations": annos})
        ds = _valid_or_user_error(cars196, d, "train")
        if ds is not None:
            _touch_items(ds)


# ----------------------------------------------------------------------------- paths out of the root

def _outside(d: Path) -> Path:
    _write_img(d / "outside.png")
    return d / "outside.png"


def test_paths_escaping_the_dataset_root_are_refused(tmp_path):
    _outside(tmp_path)
    root = tmp_path / "ds"
    _write_img(root / "img" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "../../outside.png"}], "categories": [{"id": 1, "name": "x"}]}
    (root / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(UserError, match=r"images\[0\].*outside the dataset folder"):
        CocoDetection(root / "ann.json", root / "img")
    coco["images"][0]["file_name"] = str(tmp_path / "outside.png")
    (root / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(UserError, match="absolute"):
        CocoDetection(root / "ann.json", root / "img")
    (root / "l.csv").write_text("img/a.png,x\n../outside.png,y\n")
    with pytest.raises(UserError, match=r"l\.csv: row 2.*outside"):
        MultilabelCSV(root / "l.csv")
    (root / "images.txt").write_text("1 ../../outside.png\n")
    (root / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(UserError, match="outside"):
        cub200(root, "train")
    (root / "Ebay_train.txt").write_text("image_id class_id super_class_id path\n1 1 1 ../outside.png\n")
    with pytest.raises(UserError, match=r"Ebay_train\.txt.*outside"):
        stanford_online_products(root, "train")
    # a symlinked image folder the user made is theirs and keeps working
    (root / "linked").symlink_to(tmp_path)
    (root / "l.csv").write_text("linked/outside.png,y\n")
    assert MultilabelCSV(root / "l.csv")[0][0].shape == (3, 12, 10)


def test_voc_and_nuswide_paths_escaping_refused(tmp_path):
    _outside(tmp_path)
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "Annotations" / "1.xml").write_text("<annotation><filename>../../outside.png</filename></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("1\n")
    with pytest.raises(UserError, match=r"1\.xml <filename>.*outside"):
        VOCDetection(root)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("../../x\n")
    with pytest.raises(UserError, match="outside"):
        VOCDetection(root)
    nus = tmp_path / "nus"
    (nus / "ImageList").mkdir(parents=True)
    (nus / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
    (nus / "Concepts81.txt").write_text("sky\n")
    (nus / "ImageList" / "TrainImagelist.txt").write_text("..\\..\\outside.png\n")
    (nus / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt").write_text("1\n")
    with pytest.raises(UserError, match=r"TrainImagelist\.txt:1.*outside"):
        NUSWIDE(nus, "train", image_root=nus)


def test_open_judgments_on_random_folder(tmp_path):
    (tmp_path / "mos_with_names.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError):
        open_judgments(tmp_path)


# ----------------------------------------------------------------------------------------------- CLI

@fuzz_settings(10)
@given(body=st.binary(max_size=300), kind=st.sampled_from(["random", "truncated", "bomb", "16bit"]))
def test_cli_predict_on_bad_images_is_one_line_and_writes_nothing(body, kind, tmp_path_factory, capsys):
    from vislearn.cli import main
    from vislearn.io import save_weights
    from vislearn.models.registry import create_model

    d = tmp_path_factory.mktemp("cli")
    weights = d / "w.safetensors"
    save_weights(create_model("small_convnet", num_classes=3), weights)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    img = d / "x.png"
    if kind == "random":
        img.write_bytes(body)
    elif kind == "truncated":
        img.write_bytes(_ENCODED["PNG"][:max(1, len(body))])
    elif kind == "bomb":
        img.write_bytes(_png_header_only(60_000, 60_000))
    else:
        Image.fromarray(np.full((32, 32), 300, np.uint16)).save(img)
    before[img.name] = img.read_bytes()
    code = main(["predict", "--model", "small_convnet", "--weights", str(weights), str(img), "--top", "1"])
    err = capsys.readouterr().err
    if kind == "16bit":
        assert code == 0, err
    else:
        assert code == 2 and "x.png" in err and err.strip().count("\n") == 0, err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing written or written over


def test_fuzz_budget_is_small_by_default_and_raised_by_the_variable(monkeypatch):
    from _fuzz import DEFAULT_EXAMPLES, examples

    monkeypatch.delenv("VISLEARN_FUZZ_EXAMPLES", raising=False)
    assert examples() == DEFAULT_EXAMPLES and examples(40) == 40
    monkeypatch.setenv("VISLEARN_FUZZ_EXAMPLES", "500")
    assert examples(40) == 500
    for bad in ("", "many", "0", "-3"):
        monkeypatch.setenv("VISLEARN_FUZZ_EXAMPLES", bad)
        assert examples(40) == 40
