"""ImageNet as distributed, read in place: the train archive (a tar of per-class tars), the per-class tars, the
validation archive labelled by LOC_val_solution.csv or the devkit; locally and in a bucket. Each store equals the
store of the same photos as class folders: same pixels, same labels, every source recorded."""

import json
from pathlib import Path

import numpy as np
import obstore
import pytest

from benchmarks import packing as ia
from pipeline import check
from pipeline.build import build_store
from pipeline.config import PreprocessConfig
from pipeline.store.format import MANIFEST, open_store
from tests.conftest import real_photos
from tests.stores import snapshot

WNIDS = ["n01440764", "n01443537", "n01484850", "n02102040"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """SOURCE/train/<wnid>/<wnid>_<k>.JPEG: 4 classes of 3 real photos."""
    root = tmp_path_factory.mktemp("folders") / "src"
    for k, (_, data) in enumerate(real_photos(12)):
        wnid = WNIDS[k % 4]
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "train" / wnid / f"{wnid}_{k:05d}.JPEG").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def folder_store(folders, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("ref") / "s.zarr"
    build_store(cfg(folders), store)
    return store


def cfg(source, **kw) -> PreprocessConfig:
    return PreprocessConfig(**({"source": str(source), "size": 32, "grayscale": "include", "shard_images": 4} | kw))


def by_image(store) -> dict[str, tuple]:
    """{a photo's file name: (its L, its bins, its class)} of a store, read by its recorded path."""
    g = open_store(store)
    slots, classes = g["slots"][:], g.attrs["classes"]
    L, bins, label = g["L"].oindex[slots], g["bins"].oindex[slots], g["label"].oindex[slots]
    names = [Path(str(p)).name for p in g["path"][:]]
    return {n: (L[i], bins[i], classes[label[i]] if label[i] >= 0 else None) for i, n in enumerate(names)}


def same_photos(store, reference, rename=lambda n: n) -> None:
    got, want = by_image(store), {rename(n): v for n, v in by_image(reference).items()}
    assert sorted(got) == sorted(want)
    for name, (L, bins, wnid) in got.items():
        assert np.array_equal(L, want[name][0]) and np.array_equal(bins, want[name][1]), name
        assert wnid == want[name][2] and wnid is not None, name


def manifest(store) -> list[dict]:
    return [json.loads(line) for line in (store / MANIFEST).read_text().splitlines()]


def built(source, tmp_path, **kw) -> tuple[int, list[dict]]:
    """(how many sources a build of `source` stored, the records of those it skipped)."""
    store = tmp_path / "s.zarr"
    build_store(cfg(source, **kw), store)
    records = manifest(store)
    return sum(r["outcome"] == "stored" for r in records), [r for r in records if r["outcome"] == "skipped"]


@pytest.mark.parametrize("form", ["archive in train/", "archive as SOURCE", "per-class tars"])
@pytest.mark.parametrize("class_list", [None, "synsets.txt", "LOC_synset_mapping.txt"])
def test_the_train_archive_and_its_class_tars_are_read_in_place(form, class_list, folders, folder_store, tmp_path):
    root = tmp_path / "src"
    if form == "per-class tars":
        ia.class_tars(folders / "train", root / "train")
    else:
        ia.train_archive(folders / "train", root / "train" / "ILSVRC2012_img_train.tar")
    if class_list:
        (root / class_list).write_text("".join(f"{w} words of {w}\n" for w in reversed(WNIDS)))
    source = root / "train" / "ILSVRC2012_img_train.tar" if form == "archive as SOURCE" else root
    before = snapshot(root)
    store = tmp_path / "s.zarr"
    build_store(cfg(source), store)
    same_photos(store, folder_store)
    assert snapshot(root) == before  # read in place: nothing extracted beside it
    records = manifest(store)
    assert len(records) == 12 and all(r["outcome"] == "stored" for r in records)
    inner = {"archive in train/": "train/ILSVRC2012_img_train.tar/n01440764.tar/", "per-class tars":
             "train/n01440764.tar/", "archive as SOURCE": "ILSVRC2012_img_train.tar/n01440764.tar/"}[form]  # fmt: skip
    assert any(r["path"].startswith(inner) for r in records)  # the archive and the member, named
    wanted = list(reversed(WNIDS)) if class_list else WNIDS  # the class list's order, else the sorted wnids
    assert open_store(store).attrs["classes"] == wanted
    assert check.main([str(store), "--out", str(tmp_path / "q"), "--sample", "4"]) == 0  # re-decoded in place


@pytest.mark.parametrize("labels", ["LOC_val_solution.csv", "devkit", "devkit.tar.gz"])
def test_the_val_archive_is_labelled_by_the_csv_or_the_devkit(labels, folders, folder_store, tmp_path):
    root = tmp_path / "src"
    ia.val_archive(folders / "train", root / "val" / "ILSVRC2012_img_val.tar")
    if labels == "LOC_val_solution.csv":
        ia.loc_val_solution(folders / "train", root / labels)
    else:
        ia.devkit(folders / "train", root, WNIDS, archive=labels.endswith(".gz"))
    store = tmp_path / "s.zarr"
    build_store(cfg(root, split="val"), store)
    same_photos(store, folder_store, rename=ia.val_names(folders / "train").get)  # the same photos, renamed


def test_a_damaged_class_tar_inside_the_archive_is_a_skip_and_the_rest_is_kept(folders, tmp_path):
    root = tmp_path / "src"
    archive = ia.train_archive(folders / "train", root / "train" / "ILSVRC2012_img_train.tar")
    data = bytearray(archive.read_bytes())
    inner = data.find(b"n01443537_")  # the first member header of the second class tar
    data[inner + 148 : inner + 156] = b"garbage!"  # its header checksum
    archive.write_bytes(bytes(data))
    stored, damaged = built(root, tmp_path)
    assert [r["path"] for r in damaged] == ["train/ILSVRC2012_img_train.tar/n01443537.tar"]
    assert damaged[0]["kind"] in ("damaged_archive", "truncated_archive") and "0 samples kept" in damaged[0]["reason"]
    assert stored == 9  # the other three classes


def test_the_archives_in_a_bucket_are_read_in_place(folders, folder_store, s3, tmp_path):
    local = tmp_path / "src"
    ia.train_archive(folders / "train", local / "train" / "ILSVRC2012_img_train.tar")
    ia.val_archive(folders / "train", local / "val" / "ILSVRC2012_img_val.tar")
    ia.devkit(folders / "train", local, WNIDS, archive=True)
    url = s3.put_tree(local, "imagenet", "src")
    s3.bucket("stores")
    build_store(cfg(url), "s3://stores/train.zarr")
    build_store(cfg(f"{url}/train/ILSVRC2012_img_train.tar"), "s3://stores/whole.zarr")  # the archive as SOURCE
    build_store(cfg(url, split="val"), "s3://stores/val.zarr")
    for name in ("train", "whole", "val"):  # each store as a local copy
        for key in s3.keys("stores", f"{name}.zarr"):
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(bytes(obstore.get(s3.client("stores"), key).bytes()))
    same_photos(tmp_path / "train.zarr", folder_store)
    same_photos(tmp_path / "whole.zarr", folder_store)
    same_photos(tmp_path / "val.zarr", folder_store, rename=ia.val_names(folders / "train").get)


def by_row(store) -> dict[str, tuple]:
    """{a row's image name (the Image struct's `path`, through the shard's row): (L, bins, label index)}."""
    g = open_store(store)
    slots = g["slots"][:]
    return {str(p): (g["L"][s], g["bins"][s], int(g["label"][s])) for p, s in zip(g["path"][:], slots, strict=True)}


@pytest.mark.parametrize("form", ["SOURCE/train/*.parquet", "the Hub's data/train-*.parquet", "one shard as SOURCE"])
def test_hugging_face_parquet_shards_are_read_by_row_group(form, folders, folder_store, tmp_path):
    root = tmp_path / "src"
    words = [f"words of {w}" for w in WNIDS]
    where = root / ("train" if form.startswith("SOURCE") else "data")
    shards = ia.hf_parquet(folders / "train", where, names=words)
    source = shards[0] if form == "one shard as SOURCE" else root
    store = tmp_path / "s.zarr"
    build_store(cfg(source), store)
    assert open_store(store).attrs["classes"] == words  # the schema's class names, in their order
    reference = by_image(folder_store)
    photos = sorted((w, n) for n, (_, _, w) in reference.items())  # the rows' order: class, then name
    if form == "one shard as SOURCE":  # its rows are named below its own name
        shards, photos = [Path(shards[0].name)], photos[:6]
    rows = [(s.relative_to(root).as_posix() if s.is_absolute() else str(s), k) for s in shards for k in range(6)]
    got = by_row(store)
    assert len(got) == len(rows)
    for (shard, k), (wnid, name) in zip(rows, photos, strict=True):
        L, bins, label = got[f"{shard}/{k}"]
        assert np.array_equal(L, reference[name][0]) and np.array_equal(bins, reference[name][1])
        assert label == WNIDS.index(wnid)
    assert check.main([str(store), "--out", str(tmp_path / "q"), "--sample", "4"]) == 0  # re-decoded by row


def test_a_damaged_row_group_is_a_skip_and_the_other_rows_are_kept(folders, tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "src"
    shard = ia.hf_parquet(folders / "train", root / "train", shards=1, row_group=4)[0]
    meta = pq.ParquetFile(shard).metadata.row_group(1)
    data = bytearray(shard.read_bytes())
    for c in range(meta.num_columns):  # every column chunk of the second row group
        col = meta.column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        data[start : start + 16] = b"\xff" * 16
    shard.write_bytes(bytes(data))
    stored, bad = built(root, tmp_path)
    assert [r["path"] for r in bad] == ["train/train-00000-of-00001.parquet/row-group-1"]
    assert bad[0]["kind"] == "damaged_row_group" and "rows 4 to 7" in bad[0]["reason"]
    assert stored == 8


def test_parquet_in_a_bucket_is_read_by_row_group_not_whole(folders, s3, tmp_path, monkeypatch):
    """One class of four from a shard of 12 single-row groups: the bytes fetched are the footer, the labels and the
    three rows' groups, not the shard."""
    from pipeline.storage.objects import ObjectPath

    shard = ia.hf_parquet(folders / "train", tmp_path / "src" / "train", shards=1, row_group=1)[0]
    url = s3.put_tree(tmp_path / "src", "hf-data", "src")
    fetched = []
    read_range = ObjectPath.read_range
    monkeypatch.setattr(ObjectPath, "read_range", lambda p, a, n: fetched.append(n) or read_range(p, a, n))
    store = tmp_path / "s.zarr"
    build_store(cfg(url, classes="n01443537"), store)
    assert sum(r["outcome"] == "stored" for r in manifest(store)) == 3
    assert 0 < sum(fetched) < 0.4 * shard.stat().st_size, (sum(fetched), shard.stat().st_size)


def renamed_jpg(name: str) -> str:
    return f"{Path(name).stem}.jpg"


@pytest.mark.parametrize("form", ["labelled shards", "per-class .tar.gz"])
def test_gzipped_tar_shards_are_read_as_streams_one_part_each(form, folders, folder_store, tmp_path, monkeypatch):
    from pipeline import gztars

    root = tmp_path / "src"
    if form == "labelled shards":
        shards = ia.gz_shards(folders / "train", root / "train", per_shard=5)  # 12 photos: 5, 5, 2
        rename = renamed_jpg
    else:
        ia.class_gz_tars(folders / "train", root / "train")
        shards, rename = sorted((root / "train").iterdir()), None
    opened = []
    monkeypatch.setattr(gztars, "open_stream", lambda p, o=gztars.open_stream: opened.append(str(p)) or o(p))
    store = tmp_path / "s.zarr"
    build_store(cfg(root, part_images=8), store)
    same_photos(store, folder_store, rename=rename or (lambda n: n))
    assert sorted(opened) == sorted(str(s) for s in shards for _ in range(2))  # listed once, read once
    firsts = _first_slots(store)
    assert len(firsts) == len(shards) and all(first % 4 == 0 for first in firsts)  # a part each, on a store shard


def _first_slots(store) -> list[int]:
    g = open_store(store)
    first: dict[str, int] = {}
    for path, slot in zip(g["path"][:], g["slots"][:], strict=True):
        first.setdefault(str(path).split(".tar.gz/")[0], int(slot))
    return sorted(first.values())


def test_a_broken_gzip_stream_keeps_the_samples_before_the_break(folders, tmp_path):
    root = tmp_path / "src"
    shard = ia.gz_shards(folders / "train", root / "train", per_shard=12)[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])  # cut: the stream ends inside a member
    stored, bad = built(root, tmp_path)
    assert bad[-1]["path"] == "train/shard-000000.tar.gz" and "samples kept" in bad[-1]["reason"]
    assert bad[-1]["kind"] in ("damaged_archive", "truncated_archive")
    assert all(r["kind"] == "truncated_member" for r in bad[:-1])  # the member the cut went through
    assert 3 <= stored < 12


def test_gzipped_shards_in_a_bucket(folders, folder_store, s3, tmp_path):
    ia.gz_shards(folders / "train", tmp_path / "src" / "train", per_shard=5)
    url = s3.put_tree(tmp_path / "src", "gz-shards", "src")
    s3.bucket("gz-stores")
    build_store(cfg(url), "s3://gz-stores/s.zarr")
    for key in s3.keys("gz-stores", "s.zarr"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(bytes(obstore.get(s3.client("gz-stores"), key).bytes()))
    same_photos(tmp_path / "s.zarr", folder_store, rename=renamed_jpg)


@pytest.mark.parametrize("form", list(ia.FORMS))
def test_each_form_the_benchmark_packs_holds_the_same_photos(form, folders, folder_store, tmp_path):
    """`benchmarks preprocess --layout all` compares forms of the same work: each store holds the folders' photos
    (pixels and classes, whatever their names in the form)."""

    def content(store) -> list[tuple]:  # the label as an index: WebDataset's `cls` indices name no class
        classes = open_store(store).attrs["classes"]
        return sorted((L.tobytes(), b.tobytes(), classes.index(w)) for L, b, w in by_image(store).values())

    root, split = ia.pack(form, folders, tmp_path / form)
    store = tmp_path / "s.zarr"
    build_store(cfg(root, split=split), store)
    assert content(store) == content(folder_store)
    assert all(r["outcome"] == "stored" for r in manifest(store))


def test_the_benchmark_refuses_an_unknown_form():
    from benchmarks import flow

    with pytest.raises(SystemExit) as e:
        flow.main(["--layout", "tar,zip"])
    assert e.value.code == 2
