"""The same photos in each form ImageNet and Hugging Face datasets are distributed in, built from class folders
(SOURCE/train/<wnid>/*): ImageNet's train archive (one tar per class inside one tar), the per-class tars extracted
from it, the validation archive (flat JPEGs named ILSVRC2012_val_NNNNNNNN) with LOC_val_solution.csv or the devkit
(meta.mat written by scipy.io.savemat in the devkit's structure, whose ILSVRC2012_IDs are not the sorted wnids'
order), the Hub's Parquet shards, WebDataset tar shards and gzip'd tar shards. `FORMS` packs a whole source for
`benchmarks preprocess`; the tests build each form from real photos and compare the stores."""

import io
import tarfile
from pathlib import Path

import numpy as np

from pipeline.discover import discover


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def class_tar(folder: Path) -> bytes:
    """The per-class tar of a class folder: its photos as members named as in ImageNet's (no folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for photo in sorted(p for p in folder.iterdir() if p.is_file()):
            _add(tf, photo.name, photo.read_bytes())
    return buf.getvalue()


def train_archive(split: Path, out: Path) -> Path:
    """ILSVRC2012_img_train.tar of the class folders under `split`: one `<wnid>.tar` per class."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tf:
        for folder in sorted(p for p in split.iterdir() if p.is_dir()):
            _add(tf, f"{folder.name}.tar", class_tar(folder))
    return out


def class_tars(split: Path, out: Path) -> Path:
    """The per-class tars extracted from the train archive, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        (out / f"{folder.name}.tar").write_bytes(class_tar(folder))
    return out


def val_photos(split: Path) -> list[tuple[str, str, bytes]]:
    """(validation name, wnid, bytes) of the photos under `split`'s class folders, in class then name order."""
    return [(val, p.parent.name, p.read_bytes()) for p, val in _val_names(split)]


def val_names(split: Path) -> dict[str, str]:
    """{a photo's file name in its class folder: its validation name}."""
    return {p.name: val for p, val in _val_names(split)}


def _val_names(split: Path) -> list[tuple[Path, str]]:
    photos = sorted((p.parent.name, p) for p in split.glob("*/*") if p.is_file())
    return [(p, f"ILSVRC2012_val_{i:08d}.JPEG") for i, (_, p) in enumerate(photos, 1)]


def val_archive(split: Path, out: Path) -> Path:
    """ILSVRC2012_img_val.tar: the photos as flat JPEGs named ILSVRC2012_val_NNNNNNNN.JPEG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, _, data in val_photos(split):
            _add(tf, name, data)
    return out


def loc_val_solution(split: Path, out: Path) -> Path:
    """Kaggle's LOC_val_solution.csv for those names (a box after the wnid, as in the real file)."""
    rows = ["ImageId,PredictionString"] + [f"{Path(n).stem},{w} 10 20 30 40 " for n, w, _ in val_photos(split)]
    out.write_text("\n".join(rows) + "\n")
    return out


def devkit(split: Path, root: Path, wnids: list[str], archive: bool = False) -> Path:
    """ILSVRC2012_devkit_t12 at `root` (or its .tar.gz): meta.mat's `synsets` give each wnid an ILSVRC2012_ID, in
    reverse sorted order (so an ID is not its wnid's place in the sorted list), and the ground truth gives each
    validation image its ID."""
    import scipy.io

    ids = {w: len(wnids) - k for k, w in enumerate(sorted(wnids))}
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]  # fmt: skip
    synsets = np.zeros((len(wnids) + 1, 1), dtype=[(f, "O") for f in fields])
    for k, w in enumerate(sorted(wnids, key=ids.get)):
        synsets[k, 0] = (ids[w], w, f"words of {w}", "a gloss", 0, np.zeros((1, 0)), 0, 1300)
    synsets[len(wnids), 0] = (len(wnids) + 1, "n00001740", "entity", "an inner node", 1, np.array([[1]]), 1, 0)
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{ids[w]}\n" for _, w, _ in val_photos(split)).encode()
    files = {"ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
             "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth,
             "ILSVRC2012_devkit_t12/readme.txt": b"the devkit\n"}  # fmt: skip
    if archive:
        out = root / "ILSVRC2012_devkit_t12.tar.gz"
        with tarfile.open(out, "w:gz") as tf:
            for name, data in files.items():
                _add(tf, name, data)
        return out
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / "ILSVRC2012_devkit_t12"


def hf_parquet(split: Path, out: Path, shards: int = 2, row_group: int = 4, names: list[str] | None = None) -> list:
    """The photos under `split` as the Hugging Face Hub holds an image dataset: Parquet shards of rows with an
    `image` struct (`bytes`, `path`) and an integer `label`, its class names in the schema's `huggingface`
    metadata (`names`: default the sorted wnids); rows in class then name order, `row_group` rows a group. The
    shards' paths."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    wnids = sorted(p.name for p in split.iterdir() if p.is_dir())
    photos = sorted((p.parent.name, p) for p in split.glob("*/*") if p.is_file())
    features = {"image": {"_type": "Image"}, "label": {"names": names or wnids, "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())], metadata=meta)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    paths, per = [], -(-len(photos) // shards)
    for k in range(shards):
        rows = photos[k * per : (k + 1) * per]
        table = pa.table({"image": [{"bytes": p.read_bytes(), "path": p.name} for _, p in rows],
                          "label": [wnids.index(w) for w, _ in rows]}, schema=schema)  # fmt: skip
        path = out / f"train-{k:05d}-of-{shards:05d}.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        paths.append(path)
    return paths


def gz_shards(split: Path, out: Path, per_shard: int = 5, labels: bool = True) -> list[Path]:
    """The photos under `split` as gzip'd WebDataset shards (`shard-NNNNNN.tar.gz`, `per_shard` samples each, in
    class then name order): `<wnid>_<k>.jpg` with `<wnid>_<k>.txt` holding the wnid when `labels`."""
    photos = sorted((p.parent.name, p) for p in split.glob("*/*") if p.is_file())
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(photos), per_shard):
        path = out / f"shard-{k // per_shard:06d}.tar.gz"
        with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as tf:
            for wnid, photo in photos[k : k + per_shard]:
                _add(tf, f"{photo.stem}.jpg", photo.read_bytes())
                if labels:
                    _add(tf, f"{photo.stem}.txt", wnid.encode())
        paths.append(path)
    return paths


def class_gz_tars(split: Path, out: Path) -> Path:
    """Per-class tars gzip'd (`<wnid>.tar.gz`), their members unlabelled: the name is the class."""
    import gzip

    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        (out / f"{folder.name}.tar.gz").write_bytes(gzip.compress(class_tar(folder)))
    return out


def webdataset(source: Path, out: Path, per_shard: int = 512) -> Path:
    """The files of source/train as WebDataset shards out/train/shard-NNNNN.tar (`<key>.jpg` + `<key>.cls`, the
    class index from the source's folders), in the folder layout's order."""
    files, _ = discover(source, "train")
    (out / "train").mkdir(parents=True, exist_ok=True)
    _class_list(source, out)
    for k in range(0, len(files), per_shard):
        with tarfile.open(out / "train" / f"shard-{k // per_shard:05d}.tar", "w") as tf:
            for n, src in enumerate(files[k : k + per_shard], k):
                _add(tf, f"{n:08d}.jpg", (source / src.path).read_bytes())
                if src.label >= 0:  # no label: unknown
                    _add(tf, f"{n:08d}.cls", b"%d" % src.label)
    return out


def _class_list(source: Path, out: Path) -> None:
    if (source / "synsets.txt").is_file():
        (out / "synsets.txt").write_bytes((source / "synsets.txt").read_bytes())


def _val(split: Path, out: Path) -> None:
    val_archive(split, out / "val" / "ILSVRC2012_img_val.tar")
    loc_val_solution(split, out / "LOC_val_solution.csv")


def _count(split: Path) -> int:
    return sum(1 for p in split.glob("*/*") if p.is_file())


def _parquet(split: Path, out: Path) -> None:
    # the Hub's row groups for image datasets: 100 rows
    hf_parquet(split, out / "train", shards=max(1, -(-_count(split) // 1024)), row_group=100)


# name: (pack source/train into out, the flow's split). Each form holds the same photos as the class folders; the
# gzip'd shards are as many as a folder run's parts (four), since each is one part.
FORMS = {
    "tar": (lambda split, out: webdataset(split.parent, out), "train"),
    "train-archive": (lambda split, out: train_archive(split, out / "train" / "ILSVRC2012_img_train.tar"), "train"),
    "class-tars": (lambda split, out: class_tars(split, out / "train"), "train"),
    "val-archive": (_val, "val"),
    "parquet": (_parquet, "train"),
    "tar-gz": (lambda split, out: gz_shards(split, out / "train", per_shard=-(-_count(split) // 4)), "train"),
}


def pack(form: str, source: Path, out: Path) -> tuple[Path, str]:
    """(the root of `source`'s photos packed as `form` in `out`, the split to read)."""
    fill, split = FORMS[form]
    out.mkdir(parents=True, exist_ok=True)
    fill(source / "train", out)
    _class_list(source, out)
    return out, split
