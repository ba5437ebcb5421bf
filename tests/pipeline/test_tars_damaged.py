"""WebDataset shards cut short or damaged: the samples before the break are kept as written, the break is
recorded, and every member is a sample, a recorded skip or behind the recorded break."""

import io
import signal
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tarsamples import samples
from tests.pipeline.hostile_tars import FAST, accounted, find_records, shard_in


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
