"""Sources as users have them: flat folders with labels, file lists, WebDataset tar shards, and what was found
when a layout does not fit. Stores are built from real photos and checked by the quality check."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from pipeline import check
from pipeline.build import build_store
from pipeline.config import PreprocessConfig
from pipeline.layouts import detect, find
from pipeline.store.format import MANIFEST, image_slots, open_store
from tests.conftest import real_photos

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


@pytest.fixture(scope="module")
def photos():
    return [data for _, data in real_photos(10)]


def synsets(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "synsets.txt").write_text("".join(f"{w} fish {k}\n" for k, w in enumerate(WNIDS)))


def records(store: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, (store / MANIFEST).read_text().splitlines())}


def passes_quality(store: Path, tmp: Path) -> dict:
    assert check.main([str(store), "--out", str(tmp), "--sample", "3"]) == 0
    return json.loads((tmp / f"{store.name}.quality.json").read_text())


def test_flat_folder_with_imagenet_val_labels(photos, tmp_path):
    root = tmp_path / "src"
    synsets(root)
    (root / "val").mkdir()
    lines = ["ImageId,PredictionString"]
    for k, data in enumerate(photos[:6]):
        name = f"ILSVRC2012_val_{k + 1:08d}"
        (root / "val" / f"{name}.JPEG").write_bytes(data)
        lines.append(f"{name},{WNIDS[k % 4]} 10 20 30 40 {WNIDS[0]} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    cfg = PreprocessConfig(source=str(root), split="val", grayscale="include")
    assert detect(root, "val", "auto", None) == "flat"
    got = {Path(s.path).stem: s.label for s in find(cfg).sources}
    assert got == {f"ILSVRC2012_val_{k + 1:08d}": k % 4 for k in range(6)}  # the wnid's line in synsets.txt
    store = tmp_path / "val.zarr"
    build_store(cfg, store)
    assert open_store(store)["label"][:].tolist() == [k % 4 for k in range(6)]
    assert passes_quality(store, tmp_path)["layout"] == "flat"
    (root / "LOC_val_solution.csv").unlink()  # no labels: every label is -1
    assert [s.label for s in find(cfg).sources] == [-1] * 6


def test_flat_folder_with_a_plain_labels_file_and_a_file_list(photos, tmp_path):
    root = tmp_path / "src"
    synsets(root)
    (root / "val" / "sub").mkdir(parents=True)
    for k, data in enumerate(photos[:4]):
        (root / "val" / ("sub" if k % 2 else "") / f"p{k}.jpg").write_bytes(data)
    (tmp_path / "labels.txt").write_text("p0.jpg n01484850\nsub/p1.jpg n01491361\n")
    with pytest.raises(ValueError, match="both fit"):
        detect(root, "val", "auto", None)
    cfg = PreprocessConfig(source=str(root), split="val", layout="flat", labels=str(tmp_path / "labels.txt"))
    assert [(s.path, s.label) for s in find(cfg).sources] == [
        ("val/p0.jpg", 2), ("val/p2.jpg", -1), ("val/sub/p1.jpg", 3), ("val/sub/p3.jpg", -1)
    ]  # fmt: skip
    listing = tmp_path / "list.txt"
    listing.write_text("# photos\nval/p0.jpg n01440764\nval/sub/p1.jpg\nval/gone.jpg n01440764\n../x.jpg\na b c\n"
                       "val/p0.jpg\nval/p0.jpg x y\n")  # fmt: skip
    found = find(PreprocessConfig(source=str(root), list=str(listing)))
    assert found.layout == "list" and [(s.path, s.label) for s in found.sources] == [
        ("val/p0.jpg", 0),
        ("val/sub/p1.jpg", -1),
    ]
    kinds = sorted(r["kind"] for r in found.skipped)
    assert kinds == ["bad_line", "bad_line", "bad_line", "duplicate_line", "missing"]
    assert {r["path"] for r in found.skipped} >= {"val/p0.jpg#2", "val/p0.jpg#3"}  # one path per record
    store = tmp_path / "list.zarr"
    build_store(PreprocessConfig(source=str(root), list=str(listing), grayscale="include"), store)
    recs = records(store)
    assert recs["val/gone.jpg"]["kind"] == "missing" and recs["a"]["kind"] == "bad_line"
    assert passes_quality(store, tmp_path)["layout"] == "list"


def make_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_shards_with_labels_and_bad_members(photos, tmp_path):
    root = tmp_path / "src"
    synsets(root)
    (root / "train").mkdir()
    make_shard(root / "train" / "shard-000.tar", [
        ("a.jpg", photos[0]), ("a.cls", b"2"),
        ("b.jpg", photos[1]), ("b.txt", b"n01491361\n"),
        ("c.jpeg", photos[2]), ("c.json", json.dumps({"wnid": WNIDS[1]}).encode()),
        ("d.cls", b"1"),  # no image for key d
        ("e.jpg", b"this is not a JPEG"), ("e.cls", b"0"),
        ("f.jpg", photos[3]), ("f.cls", b"seven"),
    ])  # fmt: skip
    make_shard(root / "train" / "shard-001.tar", [("g.jpg", photos[4]), ("g.cls", b"0"), ("h.jpg", photos[5])])
    with tarfile.open(root / "train" / "shard-001.tar") as tf:
        h = tf.getmember("h.jpg").offset_data
    raw = (root / "train" / "shard-001.tar").read_bytes()
    (root / "train" / "shard-001.tar").write_bytes(raw[: h + 700])  # cut inside h.jpg
    cfg = PreprocessConfig(source=str(root), grayscale="include", per_class=5)
    found = find(cfg)
    assert found.layout == "tar"
    assert {Path(s.path).name: s.label for s in found.sources} == {
        "a.jpg": 2,
        "b.jpg": 3,
        "c.jpeg": 1,
        "e.jpg": 0,
        "g.jpg": 0,
    }
    assert {r["kind"] for r in found.skipped} == {"no_image", "bad_label", "truncated_member", "truncated_archive"}
    store = tmp_path / "tar.zarr"
    result = build_store(cfg, store)
    recs = records(store)
    assert recs["train/shard-000.tar/e.jpg"]["kind"] == "not_image"
    assert recs["train/shard-000.tar/d.cls"]["kind"] == "no_image"
    assert (
        recs["train/shard-000.tar/f.jpg"]["kind"] == "bad_label"
        and "'seven'" in recs["train/shard-000.tar/f.jpg"]["reason"]
    )
    assert (
        recs["train/shard-001.tar/h.jpg"]["kind"] == "truncated_member"
        and "700 of" in recs["train/shard-001.tar/h.jpg"]["reason"]
    )
    shard = recs["train/shard-001.tar"]
    assert shard["kind"] == "truncated_archive" and "inside member 'h.jpg'; 1 samples kept" in shard["reason"]
    group = open_store(store)
    assert result["n_images"] == 4 and group["label"].oindex[image_slots(group)].tolist() == [2, 3, 1, 0]
    assert passes_quality(store, tmp_path)["layout"] == "tar"
    assert not any(p.suffix.lower() in (".jpg", ".jpeg") for p in root.rglob("*"))  # nothing was extracted


def test_integer_labels_without_synsets_name_their_classes_and_pass_the_quality_check(photos, tmp_path):
    root = tmp_path / "src"
    (root / "train").mkdir(parents=True)
    make_shard(root / "train" / "s.tar", [
        ("a.jpg", photos[0]), ("a.cls", b"2"),
        ("b.jpg", photos[1]), ("b.cls", b"0"),
        ("c.jpg", photos[2]), ("c.cls", b"1"),
        ("d.jpg", photos[3]), ("d.txt", b"n01440764\n"),  # a wnid beside the indices: a class after them
    ])  # fmt: skip
    cfg = PreprocessConfig(source=str(root), grayscale="include")
    found = find(cfg)
    assert found.classes == ["0", "1", "2", "n01440764"]
    assert [(s.wnid, s.label) for s in found.sources] == [("2", 2), ("0", 0), ("1", 1), ("n01440764", 3)]
    store = tmp_path / "s.zarr"
    build_store(cfg, store)
    group = open_store(store)
    assert group["label"][:].tolist() == [2, 0, 1, 3] and group.attrs["classes"] == found.classes
    rep, _ = check.run(store, sample=4)
    assert rep.ok, [c for c in rep.checks if not c["ok"]]


def make_hostile_shard(path: Path, photos: list[bytes]) -> int:
    """A shard with every kind of member that is not a sample, then a header that lies about its size (the
    members after it are not listed); returns the offset where the listing stops."""
    bad = b"k\xff.jpg".decode("utf-8", "surrogateescape")  # a name that is not UTF-8, as tarfile reads it
    members = [("a.jpg", b"an earlier copy"), ("a.jpg", photos[0]), ("a.cls", b"1"), ("a.txt", b"n01 unused")]
    members += [("a.png", photos[1]), ("b.jpg", photos[2]), ("b.cls", b"0"), ("c.mp4", b"no image"), (bad, photos[3])]
    members += [("lie.jpg", photos[4]), ("after.jpg", photos[5]), ("after.cls", b"0")]
    links = {"a.jpg": tarfile.SYMTYPE, "d": tarfile.DIRTYPE, "b.jpg#2": tarfile.LNKTYPE, "f.jpg": tarfile.FIFOTYPE}
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            if name == "b.cls":  # links and the like between the samples, one named as a stored image
                for link, kind in links.items():
                    info = tarfile.TarInfo(link)
                    info.type, info.linkname = kind, "b.jpg"
                    tf.addfile(info)
    with tarfile.open(path) as tf:
        lie = tf.getmember("lie.jpg").offset
    raw = bytearray(path.read_bytes())
    raw[lie + 124 : lie + 136] = b"%011o\0" % 100  # 100 bytes claimed: tarfile meets JPEG data next and stops
    raw[lie + 148 : lie + 156] = b" " * 8
    raw[lie + 148 : lie + 156] = b"%06o\0 " % sum(raw[lie : lie + 512])
    path.write_bytes(bytes(raw))
    return lie + 512 + 512


def test_hostile_members_are_each_recorded_once_and_the_store_passes_the_quality_check(photos, tmp_path):
    root = tmp_path / "src"
    synsets(root)
    (root / "train").mkdir()
    stop = make_hostile_shard(root / "train" / "s.tar", photos)
    store = tmp_path / "s.zarr"
    build_store(PreprocessConfig(source=str(root), grayscale="include"), store)
    recs = {
        p.removeprefix("train/s.tar"): (r["kind"] if r["outcome"] == "skipped" else r["label"])
        for p, r in records(store).items()
    }
    assert recs == {
        "/a.jpg": 1,  # the later copy, as tar extracts it
        "/a.jpg#2": "duplicate_member",
        "/a.jpg#3": "not_a_file",  # the symbolic link of the same name
        "/a.txt": "unused_member",
        "/a.png": "unused_member",
        "/b.jpg": 0,
        "/c.mp4": "no_image",
        "/d": "not_a_file",
        "/b.jpg#2": "not_a_file",
        "/f.jpg": "not_a_file",
        "/k\\xff.jpg": "bad_name",
        "/lie.jpg": "unreadable",  # its first 100 bytes: a JPEG header cut short
        "": "damaged_archive",
    }
    reason = records(store)["train/s.tar"]["reason"]
    assert f"listing stopped at byte {stop}" in reason and "3 samples kept" in reason, reason
    rep, _ = check.run(store, sample=3)
    assert rep.ok, [c for c in rep.checks if not c["ok"]]
    assert any(c["check"].startswith("every source accounted for once") for c in rep.checks)


def test_a_layout_that_does_not_fit_says_what_was_found(photos, tmp_path):
    root = tmp_path / "src"
    (root / "val").mkdir(parents=True)
    for k in range(3):
        (root / "val" / f"{k}.jpg").write_bytes(photos[k])
    with pytest.raises(ValueError, match=r"3 image files directly under val/.*use --layout flat"):
        detect(root, "val", "classes", None)
    with pytest.raises(ValueError, match="expected the tar layout"):
        detect(root, "val", "tar", None)
    with pytest.raises(ValueError, match="needs --list"):
        detect(root, "val", "list", None)


@pytest.mark.parametrize("layout", ["flat", "list", "tar"])
def test_a_run_stopped_after_its_first_part_resumes_to_the_same_store(photos, tmp_path, layout):
    from concurrent.futures import Future

    from pipeline.build import serial

    root = tmp_path / "src"
    synsets(root)
    (root / "val").mkdir()
    extra = {}
    if layout == "tar":
        make_shard(root / "val" / "s0.tar", [(f"k{k}.jpg", d) for k, d in enumerate(photos[:8])])
    else:
        for k, data in enumerate(photos[:8]):
            (root / "val" / f"k{k}.jpg").write_bytes(data)
        if layout == "list":
            (tmp_path / "list.txt").write_text("".join(f"val/k{k}.jpg {WNIDS[k % 4]}\n" for k in range(8)))
            extra = {"list": str(tmp_path / "list.txt")}
    cfg = PreprocessConfig(source=str(root), split="val", grayscale="include", part_images=2, shard_images=2, **extra)
    build_store(cfg, tmp_path / "clean.zarr")
    started = []

    def dies_at_the_third_part(kwargs: dict) -> Future:
        started.append(kwargs["part"])
        if len(started) == 3:
            raise RuntimeError("killed")
        return serial(kwargs)

    with pytest.raises(RuntimeError, match="killed"):
        build_store(cfg, tmp_path / "resumed.zarr", dies_at_the_third_part)
    assert build_store(cfg, tmp_path / "resumed.zarr")["state"] == "resume"
    a, b = (open_store(tmp_path / f"{k}.zarr") for k in ("clean", "resumed"))
    for name in ("L", "bins", "label"):
        assert (a[name][:] == b[name][:]).all(), name
    assert (tmp_path / "clean.zarr" / MANIFEST).read_text() == (tmp_path / "resumed.zarr" / MANIFEST).read_text()


def test_the_command_line_names_the_layout_it_expected_and_what_it_found(photos, tmp_path, capsys):
    from flows.preprocess import main

    root = tmp_path / "src"
    (root / "val").mkdir(parents=True)
    for k in range(20):
        (root / "val" / f"{k}.JPEG").write_bytes(photos[k % len(photos)])
    assert main([str(root), str(tmp_path / "s.zarr"), "--split", "val", "--layout", "classes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "20 image files directly under val/" in err[0] and "use --layout flat" in err[0]
    assert main([str(root), str(tmp_path / "s.zarr"), "--split", "val", "--layout", "zip"]) == 2
    assert "layout must be one of" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()
