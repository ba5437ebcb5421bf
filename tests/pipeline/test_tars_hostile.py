"""Hostile WebDataset shards: any bytes as a label, any member types and names, archives cut or corrupted.
Each gives samples or recorded skips, never an exception, and every member of a shard is accounted for."""

import io
import json
import signal
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import PreprocessConfig
from pipeline.labels import MAX_CLASSES
from pipeline.layouts import find
from pipeline.tarsamples import samples

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = {"reg": tarfile.REGTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}
TYPES |= {"fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}


def write_tar(path: Path, members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> None:
    """members: (name, data) regular files, or (name, type, data or link target)."""
    with tarfile.open(path, "w", format=fmt) as tf:
        for m in members:
            name, kind, data = m if len(m) == 3 else (m[0], "reg", m[1])
            info = tarfile.TarInfo(name)
            info.type = TYPES[kind]
            if kind == "reg":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind in ("sym", "lnk"):
                info.linkname = data.decode("utf-8", "replace")
            info.devmajor, info.devminor = (1, 3) if kind == "chr" else (0, 0)
            tf.addfile(info)


def shard_in(tmp: str, members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> Path:
    (Path(tmp) / "train").mkdir(exist_ok=True)
    path = Path(tmp) / "train" / "s.tar"
    write_tar(path, members, fmt)
    return path


def accounted(out, skips) -> Counter:
    """The member names that samples and skips account for, each as often as it is accounted for."""
    names = Counter()
    for s in out:
        names.update([s.image.name] + ([s.label_member] if s.label_member else []))
    for k in skips:
        names.update(([k.name] if k.name is not None else []) + list(k.covers))
    return names


def find_records(tmp: str) -> list[str]:
    """Every path `find` records (sources and skips): each must be unique for the store's accounting."""
    found = find(PreprocessConfig(source=tmp, layout="tar"))
    assert all(r["reason"] for r in found.skipped)
    return [s.path for s in found.sources] + [r["path"] for r in found.skipped]


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


# -- archives cut short or damaged --------------------------------------------------------------------------------


def header_offsets(raw: bytes) -> dict[str, tuple[int, int, int]]:
    """{name: (header offset, data offset, size)} of a well-formed tar."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return {m.name: (m.offset, m.offset_data, m.size) for m in tf.getmembers()}


def set_size(raw: bytearray, header: int, field: bytes) -> None:
    """Rewrite a header's size field and its checksum, as a writer that got the size wrong would."""
    raw[header + 124 : header + 136] = field
    raw[header + 148 : header + 156] = b" " * 8
    raw[header + 148 : header + 156] = b"%06o\0 " % sum(raw[header : header + 512])


def test_members_after_a_header_that_lies_about_its_size_are_a_recorded_damage():
    data = [("a.jpg", b"A" * 3000), ("a.cls", b"1"), ("b.jpg", b"B" * 100), ("b.cls", b"2")]
    with tempfile.TemporaryDirectory() as tmp:
        shard = shard_in(tmp, data)
        raw = bytearray(shard.read_bytes())
        header, _, _ = header_offsets(bytes(raw))["a.jpg"]
        set_size(raw, header, b"%011o\0" % 100)  # 100 bytes claimed, 3000 there: tarfile meets JPEG data next
        shard.write_bytes(bytes(raw))
        out, skips = samples(shard)
        assert [(s.image.name, s.image.size, s.label) for s in out] == [("a.jpg", 100, None)]
        assert [(k.name, k.kind) for k in skips] == [(None, "damaged_archive")]
        assert f"listing stopped at byte {header + 1024}" in skips[0].reason and "1 samples kept" in skips[0].reason
        assert f"{len(raw) - header - 1024} bytes not read" in skips[0].reason


class Hang(BaseException):
    pass


def test_data_after_the_end_of_archive_and_a_negative_size_are_recorded():
    with tempfile.TemporaryDirectory() as tmp:
        shard = shard_in(tmp, [("a.jpg", b"A" * 10), ("b.jpg", b"B" * 10)])
        clean = shard.read_bytes()
        shard.write_bytes(clean + clean)  # two archives end to end: the second is not read
        assert [k.kind for k in samples(shard)[1]] == ["damaged_archive"]
        raw = bytearray(clean)
        header = header_offsets(clean)["b.jpg"][0]
        set_size(raw, header, b"\xff" + (256**11 - 512).to_bytes(11, "big"))  # -512: tarfile would loop on it
        shard.write_bytes(bytes(raw))

        def hangs(*_):
            raise Hang("the listing does not end")  # not an Exception: nothing on the way may catch it

        previous = signal.signal(signal.SIGALRM, hangs)
        signal.alarm(20)
        try:
            out, skips = samples(shard)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert [s.image.name for s in out] == ["a.jpg"] and [k.kind for k in skips] == ["damaged_archive"]
        assert f"listing stopped at byte {header} (member 'b.jpg' declares -512 bytes)" in skips[0].reason


def test_a_member_cut_short_is_recorded():
    members = [("a.jpg", b"A" * 1000), ("a.cls", b"1"), ("b.jpg", b"B" * 1000), ("b.cls", b"22")]
    with tempfile.TemporaryDirectory() as tmp:
        shard = shard_in(tmp, members)
        raw = shard.read_bytes()
        at = header_offsets(raw)
        shard.write_bytes(raw[: at["b.jpg"][1] + 500])  # inside b.jpg
        out, skips = samples(shard)
        assert [s.image.name for s in out] == ["a.jpg"]
        assert [(k.name, k.kind) for k in skips] == [("b.jpg", "truncated_member"), (None, "truncated_archive")]
        assert "500 of 1000 bytes" in skips[0].reason and "inside member 'b.jpg'" in skips[1].reason
        shard.write_bytes(raw[: at["b.cls"][1] + 1])  # inside b.cls: b's label cannot be read
        out, skips = samples(shard)
        assert [s.image.name for s in out] == ["a.jpg"]
        assert [(k.name, k.kind, k.covers) for k in skips][0] == ("b.jpg", "bad_label", ("b.cls",))
        assert "cut short: 1 of 2 bytes" in skips[0].reason


@pytest.mark.parametrize("keep,broken", [(0, True), (1, True), (511, True), (512, False), (1024, False)])
def test_a_tar_is_whole_only_with_an_end_of_archive_block(keep, broken):
    """Cut at a member boundary, or inside the zero blocks every tar writer ends with, a shard may have lost
    members: its samples are kept and the cut recorded; one whole zero block or more is a clean end."""
    with tempfile.TemporaryDirectory() as tmp:
        shard = shard_in(tmp, [("a.jpg", b"x" * 700), ("a.cls", b"0")], tarfile.USTAR_FORMAT)
        raw = shard.read_bytes()
        shard.write_bytes(raw[: header_offsets(raw)["a.cls"][1] + 512 + keep])  # after a.cls's padded data
        out, skips = samples(shard)
        assert [(s.image.name, s.label) for s in out] == [("a.jpg", 0)]
        assert [k.kind for k in skips] == (["truncated_archive"] if broken else [])


@st.composite
def damaged_shards(draw):
    """(original bytes, [(image, label) members in order], the damaged bytes, the cut or None)."""
    n = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(0, 1500), min_size=n, max_size=n))
    members = []
    for k, size in enumerate(sizes):
        members += [(f"s{k}.jpg", bytes([k + 1]) * size), (f"s{k}.cls", str(k).encode())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    damaged, cut = bytearray(raw), None
    how = draw(st.sampled_from(["cut", "byte", "both"]))
    if how in ("byte", "both"):
        at = draw(st.integers(0, len(raw) - 1))
        damaged[at] = draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    if how in ("cut", "both"):
        cut = draw(st.integers(0, len(raw)))
        damaged = damaged[:cut]
    return raw, [m[0] for m in members], bytes(damaged), cut if how == "cut" else None


@FAST
@given(case=damaged_shards())
def test_a_cut_or_corrupted_shard_keeps_a_consistent_prefix_and_records_the_break(case):
    raw, names, damaged, cut = case
    at = header_offsets(raw)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").mkdir()
        shard = Path(tmp) / "train" / "s.tar"
        shard.write_bytes(damaged)
        out, skips = samples(shard)
        images = [(s.image.name, s.image.offset, s.image.size) for s in out]
        assert all(at[name][1:] == (offset, size) for name, offset, size in images)  # members as written
        assert [i[1] for i in images] == sorted(i[1] for i in images)
        broken = any(k.name is None for k in skips)
        seen = accounted(out, skips)
        lost = [name for name in names if not seen[name]]
        assert broken or not lost  # a member not accounted for is behind a recorded break
        images_in_order = [n for n in names if n.endswith(".jpg")]
        returned = [name for name, _, _ in images]
        if lost:  # what follows the first lost member is lost too: the samples kept are before the break
            first = names.index(lost[0])
            assert all(names.index(name) < first for name in returned)
        assert returned == [n for n in images_in_order if n in returned]
        if cut is not None:
            last_name = names[-1]
            padded_end = at[last_name][1] + -(-at[last_name][2] // 512) * 512
            assert broken == (cut < padded_end + 512)  # a clean tar ends with at least one zero block
            for s in out:  # a label is the one written, or none when the cut fell before its member
                key = s.image.name[:-4]
                assert s.label == int(key[1:]) or (s.label is None and at[f"{key}.cls"][0] + 512 > cut)
            for k, name in enumerate(images_in_order):  # every sample wholly before the cut is kept
                label = f"s{k}.cls"
                if at[label][1] + at[label][2] <= cut:
                    assert name in returned
        assert len(set(find_records(tmp))) == len(out) + len(skips)
