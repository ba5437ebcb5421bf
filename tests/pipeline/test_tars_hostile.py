"""Hostile WebDataset shards: any bytes as a label, any member types and names. Each gives samples or recorded
skips, never an exception, and every member of a shard is accounted for (archives cut or corrupted:
test_tars_damaged.py)."""

import json
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.config import PreprocessConfig
from pipeline.labels import MAX_CLASSES
from pipeline.layouts import find
from pipeline.tarsamples import samples
from tests.pipeline.hostile_tars import FAST, TYPES, accounted, find_records, shard_in

# -- labels -----------------------------------------------------------------------------------------------------


BAD_LABELS = [
    ("txt", b"", "no word"),
    ("txt", b" \n\t", "no word"),
    ("txt", b"\x00abc", "not a wnid"),
    ("json", b"5", "neither a wnid"),
    ("json", b"[1,2]", "neither a wnid"),
    ("json", b"null", "neither a wnid"),
    ("json", b'{"wnid":["a"]}', "not a wnid"),
    ("json", b'{"wnid": "n01", ', "not JSON"),
    ("json", b"[" * 100_000 + b"]" * 100_000, "not JSON (RecursionError)"),
    ("json", b'{"cls": true}', '"cls" is not an integer'),
    ("json", b'{"cls": 2.0}', '"cls" is not an integer'),
    ("json", b'{"cls": 40000}', "out of [0, 32768)"),
    ("json", b'"two words"', "not a wnid"),
    ("json", b'"\\ud800"', "not a wnid"),
    ("json", b'""', "not a wnid"),
    ("cls", b"99999999999999999999", "out of [0, 32768)"),
    ("cls", b"9" * 5000, "out of [0, 32768)"),
    ("cls", b"32768", "out of [0, 32768)"),
    ("cls", b"-1", "out of [0, 32768)"),
    ("cls", b"1.5", "not an integer class index"),
    ("cls", b"", "not an integer class index"),
    ("cls", "\u0663".encode(), "not an integer class index"),  # an Arabic-Indic 3: int() takes it, we do not
    ("cls", b"\xff\xfe", "not UTF-8"),
]
GOOD_LABELS = [
    ("cls", b" 7\n", 7),
    ("cls", b"32767", 32767),
    ("cls", b"\xef\xbb\xbf3", 3),  # a BOM
    ("txt", b"n01440764 tench\n", "n01440764"),
    ("json", b'"n01440764"', "n01440764"),
    ("json", b'{"wnid": "n02", "cls": 3}', "n02"),
    ("json", b'{"cls": 3, "caption": "a fish"}', 3),
]


@pytest.mark.parametrize(("ext", "data", "why"), BAD_LABELS)
def test_a_bad_label_is_a_recorded_skip_naming_what_it_held(ext, data, why):
    with tempfile.TemporaryDirectory() as tmp:
        out, skips = samples(shard_in(tmp, [("k.jpg", b"jpeg"), (f"k.{ext}", data)]))
        assert out == [] and [(k.name, k.kind, k.covers) for k in skips] == [("k.jpg", "bad_label", (f"k.{ext}",))]
        assert why in skips[0].reason and len(skips[0].reason) < 200, skips[0].reason
        assert find_records(tmp) == ["train/s.tar/k.jpg"]


@pytest.mark.parametrize(("ext", "data", "label"), GOOD_LABELS)
def test_the_label_forms_accepted(ext, data, label):
    with tempfile.TemporaryDirectory() as tmp:
        out, skips = samples(shard_in(tmp, [("k.jpg", b"jpeg"), (f"k.{ext}", data)]))
        assert skips == [] and [(s.label, s.label_member) for s in out] == [(label, f"k.{ext}")]


def test_a_class_index_must_name_a_class_of_synsets_txt():
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "synsets.txt").write_text("n01 a\nn02 b\n")
        shard_in(tmp, [("a.jpg", b"x"), ("a.cls", b"1"), ("b.jpg", b"x"), ("b.json", b'{"cls": 2}')])
        found = find(PreprocessConfig(source=tmp, layout="tar"))
        assert [(s.path, s.wnid, s.label) for s in found.sources] == [("train/s.tar/a.jpg", "n02", 1)]
        assert [(r["path"], r["kind"]) for r in found.skipped] == [("train/s.tar/b.jpg", "bad_label")]
        assert "out of [0, 2)" in found.skipped[0]["reason"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["wnid", "cls", "x"]), inner),
    max_leaves=8,
)


def as_json(value) -> bytes:
    return json.dumps(value).encode()


NUMBERS = st.integers(-5, 40_000) | st.integers(-(10**25), 10**25)
WNIDS = st.from_regex(r"n[0-9]{8}", fullmatch=True) | st.text(max_size=6)
LABEL_BYTES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.from_regex(rb"\A\s*-?[0-9]{1,6}\s*\Z"),
    NUMBERS.map(lambda n: str(n).encode()),
    JSON_VALUES.map(as_json),
    WNIDS.map(as_json),
    st.fixed_dictionaries({}, optional={"wnid": WNIDS | JSON_VALUES, "cls": NUMBERS}).map(as_json),
)


@FAST
@given(ext=st.sampled_from(["cls", "txt", "json"]), data=LABEL_BYTES)
@example(ext="json", data=b"[" * 50_000)
@example(ext="cls", data=b"99999999999999999999")
def test_any_label_bytes_give_a_label_or_a_bad_label_skip(ext, data):
    with tempfile.TemporaryDirectory() as tmp:
        out, skips = samples(shard_in(tmp, [("k.jpg", b"jpeg"), (f"k.{ext}", data)]))
        if out:
            label = out[0].label
            assert skips == [] and (
                (isinstance(label, int) and not isinstance(label, bool) and 0 <= label < MAX_CLASSES)
                or (isinstance(label, str) and label.isprintable() and label and " " not in label)
            )
        else:
            assert [(k.name, k.kind) for k in skips] == [("k.jpg", "bad_label")] and skips[0].reason
        assert len(find_records(tmp)) == 1


# -- member types and names ---------------------------------------------------------------------------------------


KEYED = st.builds(  # keys shared by several members: samples with labels, second images, duplicates
    "{}{}".format,
    st.sampled_from(["k", "j", "../k", "日本"]),
    st.sampled_from([".jpg", ".jpeg", ".png", ".webp", ".cls", ".txt", ".json", ".mp4", "", ".b.jpg", ".JPG"]),
)
NAMES = st.one_of(
    KEYED,
    KEYED,
    st.sampled_from(["../../x.jpg", "/abs/k.jpg", "a.b.c.jpg", "ü.jpg", "dir/k.cls", "k", "./k.jpg", "x/", "k#2"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12),
)
CONTENT = st.one_of(st.binary(max_size=700), st.sampled_from([b"3", b"n01 x", b'"n01"', b'{"cls": 1}', b""]))
KINDS = st.sampled_from(["reg"] * 3 + sorted(TYPES))
GOOD = {"cls": b"3", "txt": b"n01 x", "json": b'{"wnid": "n01"}'}
SAMPLE = st.builds(  # an image and a label of one key, the label mostly valid
    lambda key, image, ext, label: [(f"{key}.{image}", "reg", b"img"), (f"{key}.{ext}", "reg", label or GOOD[ext])],
    st.sampled_from(["k", "j", "../k", "日本", "/abs/k", "a.b"]),
    st.sampled_from(["jpg", "png", "JPEG"]),
    st.sampled_from(sorted(GOOD)),
    st.none() | st.none() | CONTENT,
)
MEMBERS = st.lists(SAMPLE | st.tuples(NAMES, KINDS, CONTENT).map(lambda m: [m]), max_size=8).map(lambda ms: sum(ms, []))


@FAST
@given(members=MEMBERS)
@example(members=[("a.jpg", "reg", b"1"), ("a.jpg", "sym", b"a.jpg"), ("a", "dir", b""), ("a.cls", "reg", b"1")])
def test_every_member_is_an_image_a_label_or_a_recorded_skip(members):
    with tempfile.TemporaryDirectory() as tmp:
        shard = shard_in(tmp, members)
        out, skips = samples(shard)
        with tarfile.open(shard) as tf:
            listed = Counter(m.name for m in tf.getmembers())
        assert accounted(out, skips) == listed
        assert all(k.name is not None and k.reason for k in skips)  # a well-formed archive: no shard record
        paths = find_records(tmp)
        assert len(set(paths)) == len(paths) == len(out) + len(skips)


def test_a_name_that_is_not_utf8_is_recorded_with_its_bytes_escaped():
    with tempfile.TemporaryDirectory() as tmp:
        bad = b"k\xff.jpg".decode("utf-8", "surrogateescape")  # as tarfile reads such a name
        out, skips = samples(shard_in(tmp, [(bad, b"x"), ("k.jpg", b"x")], tarfile.GNU_FORMAT))
        assert [s.image.name for s in out] == ["k.jpg"] and [(k.name, k.kind) for k in skips] == [(bad, "bad_name")]
        assert find_records(tmp) == ["train/s.tar/k.jpg", "train/s.tar/k\\xff.jpg"]


def test_a_shard_that_is_not_a_regular_file_is_recorded():
    import os

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train" / "dir.tar").mkdir(parents=True)
        os.mkfifo(Path(tmp) / "train" / "fifo.tar")  # opening it would block
        found = find(PreprocessConfig(source=tmp, layout="tar"))
        assert [(r["path"], r["kind"]) for r in found.skipped] == [
            ("train/dir.tar", "not_a_file"),
            ("train/fifo.tar", "not_a_file"),
        ]
