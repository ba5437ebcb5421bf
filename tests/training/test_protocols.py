"""`colorize-evaluate --protocol val5k|val50k` on ImageNet's validation images as distributed (the val folder, the
val archive read in place): CF, both ΔCFs and the Fréchet distance checked against computations of this test's
own on the images the command writes; reference statistics reused, and recomputed when the pixels change; the
model card carrying the measures under the protocol's name; refusals in one line."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from tests.conftest import make_store, real_photos
from tests.training.fidnet import write
from training.config import TrainConfig
from training.evaluate import main as evaluate
from training.export import main as export
from training.run import train

TINY = {"width": 1 / 8, "size": 64, "batch_size": 4, "holdout": 0.25, "log_every": 1, "eval_images": 4,
        "tensorboard": False, "device": "cpu"}  # fmt: skip
N = 9  # real photos named ILSVRC2012_val_00000001 .. 09


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run, a random-weights stand-in for the Inception, and ImageNet's val images as a folder and as
    the val archive: N real photos, one past the first 5,000, a damaged JPEG and a file of another name."""
    root = tmp_path_factory.mktemp("protocols")
    store, _ = make_store(root / "s", n=12, size=64)
    train(TrainConfig(store=str(store), out=str(root / "run"), steps=2, **TINY))
    files = {f"ILSVRC2012_val_{k + 1:08d}.JPEG": data for k, (_, data) in enumerate(real_photos(N + 1)[:N])}
    files["ILSVRC2012_val_00005001.JPEG"] = real_photos(N + 1)[N][1]
    files["ILSVRC2012_val_00000010.JPEG"] = b"\xff\xd8\xff\xe0 damaged"
    files["LOC_synset_mapping.txt.bak"] = b"not an image"
    val = root / "imagenet" / "val"
    val.mkdir(parents=True)
    for name, data in sorted(files.items(), reverse=True):  # listed in reverse: the order is the numbers'
        (val / name).write_bytes(data)
    archive = root / "ILSVRC2012_img_val.tar"
    with tarfile.open(archive, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return {"run": root / "run", "ckpt": str(root / "run" / "checkpoint-last.pt"), "val": val, "archive": archive,
            "net": write(root / "net.pt"), "root": root}  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORIZE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(world, out: Path, source, protocol="val5k", *extra) -> dict:
    args = ["--checkpoint", world["ckpt"], "--protocol", protocol, "--source", str(source), "--out", str(out)]
    assert evaluate([*args, "--fid-weights", str(world["net"]), "--save-images", *extra]) == 0
    return json.loads((out / f"evaluation-{protocol}.json").read_text())


def refused(argv) -> bool:
    """Whether the command stops with exit code 2 (argparse's errors exit, refusals return)."""
    try:
        return evaluate(argv) == 2
    except SystemExit as e:
        return e.code == 2


def cf(rgb: np.ndarray) -> float:
    """DDColor's and CT2's colourfulness, written out afresh."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    rg, yb = np.absolute(r - g), np.absolute(0.5 * (r + g) - b)
    return np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)


def features(net: Path, folder: Path) -> np.ndarray:
    """The stand-in's features of the PNGs in `folder`, one image at a time, straight from the TorchScript."""
    model = torch.jit.load(str(net)).eval()
    out = []
    for png in sorted(folder.glob("*.png")):
        x = torch.from_numpy(np.asarray(Image.open(png), dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out.append(model(x, return_features=True).double().numpy()[0])
    return np.stack(out)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.square(a.mean(0) - b.mean(0)).sum() + np.trace(s1 + s2 - 2 * root))


def test_val5k_from_the_archive_matches_this_tests_own_cf_delta_cf_and_distance(world, cache, tmp_path):
    got = run(world, tmp_path / "a", world["archive"])
    pred_dir, truth_dir = tmp_path / "a" / "evaluation-val5k" / "pred", tmp_path / "a" / "evaluation-val5k" / "truth"
    names = sorted(p.stem for p in truth_dir.glob("*.png"))
    assert names == [f"ILSVRC2012_val_{k:08d}" for k in range(1, N + 1)]  # not 5001, not the damaged one
    assert got["images"] == N and [s["path"].rsplit("/", 1)[-1] for s in got["skipped"]] == [
        "ILSVRC2012_val_00000010.JPEG"
    ]
    assert "4,991 of the protocol's 5,000 images were not measured" in got["note"]
    pred = [np.asarray(Image.open(pred_dir / f"{n}.png")) for n in names]
    truth = [np.asarray(Image.open(truth_dir / f"{n}.png")) for n in names]
    cf_pred, cf_truth = np.array([cf(x) for x in pred]), np.array([cf(x) for x in truth])
    m = got["model"]
    assert m["cf"] == pytest.approx(cf_pred.mean(), rel=1e-9)
    assert got["ground_truth"]["cf"] == pytest.approx(cf_truth.mean(), rel=1e-9)
    assert m["delta_cf"] == pytest.approx(abs(cf_pred.mean() - cf_truth.mean()), rel=1e-9, abs=1e-9)
    assert m["delta_cf_images"] == pytest.approx(np.abs(cf_pred - cf_truth).mean(), rel=1e-9)
    assert m["delta_cf_images"] >= m["delta_cf"] - 1e-12  # the mean of |differences| bounds |difference of means|
    mse = [np.square(p.astype(float) - t.astype(float)).mean() for p, t in zip(pred, truth, strict=True)]
    assert m["psnr"] == pytest.approx(np.mean([10 * np.log10(255**2 / e) for e in mse]), rel=1e-9)
    # the truth is the protocol's: the centre square, resized to 256 by PIL's bilinear filter
    first = Image.open(world["val"] / f"{names[0]}.JPEG").convert("RGB")
    side = min(first.size)
    left, top = round((first.width - side) / 2), round((first.height - side) / 2)
    expect = first.crop((left, top, left + side, top + side)).resize((256, 256), Image.BILINEAR)
    assert np.array_equal(truth[0], np.asarray(expect))
    # the distance, from this test's own features of the written images: not an FID, and said so
    assert "fid" not in m and not got["fid"]["reference_weights"]
    assert m["fid_unverified"] == pytest.approx(
        distance(features(world["net"], pred_dir), features(world["net"], truth_dir)), rel=1e-4
    )
    report = (tmp_path / "a" / "evaluation-val5k.md").read_text()
    assert "not an FID" in report and "DDColor-L | 3.92 | 38.26 | 0.05" in report and "published" in report


def test_the_folder_gives_the_archives_figures_and_the_reference_statistics_are_reused_then_renewed(
    world, cache, tmp_path
):
    a = run(world, tmp_path / "a", world["archive"])
    assert not a["fid"]["reference_stats_reused"]
    b = run(world, tmp_path / "b", world["val"])  # the folder's listing differs: its own statistics
    for key in ("cf", "delta_cf", "delta_cf_images", "psnr", "ssim", "fid_unverified"):
        assert b["model"][key] == pytest.approx(a["model"][key], rel=1e-6), key
    c = run(world, tmp_path / "c", world["val"])
    assert c["fid"]["reference_stats_reused"] and c["model"]["fid_unverified"] == b["model"]["fid_unverified"]
    # the same names, other pixels: the cache is checked against the pixels and renewed
    changed = tmp_path / "imagenet" / "val"
    changed.mkdir(parents=True)
    for f in world["val"].iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    img = Image.open(changed / "ILSVRC2012_val_00000002.JPEG").convert("RGB").transpose(Image.FLIP_TOP_BOTTOM)
    img.save(changed / "ILSVRC2012_val_00000002.JPEG", quality=90)
    d = run(world, tmp_path / "d", changed)
    assert not d["fid"]["reference_stats_reused"]
    fresh = run(world, tmp_path / "e", changed, "val5k", "--fid-mode", "legacy_tensorflow")
    assert d["model"]["fid_unverified"] == pytest.approx(fresh["model"]["fid_unverified"], rel=1e-9)


def test_val50k_takes_the_image_past_the_first_5000(world, cache, tmp_path):
    got = run(world, tmp_path / "a", world["archive"], "val50k")
    assert got["images"] == N + 1 and got["protocol"] == "val50k"
    truth = np.asarray(Image.open(tmp_path / "a" / "evaluation-val50k" / "truth" / "ILSVRC2012_val_00005001.png"))
    whole = Image.open(world["val"] / "ILSVRC2012_val_00005001.JPEG").convert("RGB")
    assert np.array_equal(truth, np.asarray(whole.resize((256, 256), Image.BILINEAR)))  # no crop


def test_the_model_card_carries_the_measures_under_the_protocols_name(world, cache, tmp_path):
    import yaml

    run(world, world["run"], world["archive"])  # beside the checkpoint, as a user would
    assert export([str(world["run"]), "--out", str(tmp_path / "card")]) == 0
    text = (tmp_path / "card" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    results = {r["dataset"]["name"]: r for r in meta["model-index"][0]["results"]}
    val5k = results["ImageNet val5k"]
    kinds = {m["type"]: m["value"] for m in val5k["metrics"]}
    assert {"colorfulness_cf", "delta_cf", "delta_cf_per_image", "psnr"} <= set(kinds)
    assert "fid" not in kinds  # the stand-in's distance is never carried as an FID
    assert "val5k" in val5k["dataset"]["args"]["protocol"] and "not comparable" in val5k["dataset"]["args"]["protocol"]
    assert "tiny.zarr" in results  # the store's own evaluation is there too
    assert "DDColor-L on val5k: FID 3.92" in text and "published" in text


def test_a_reference_fid_goes_into_the_card(world):
    from training import checkpoint, modelcard, modelfolder

    state = checkpoint.load(world["ckpt"])
    model, _, _ = checkpoint.load_model(world["ckpt"], "cpu")
    config = modelfolder.model_config(state, model)
    evaluation = json.loads((world["run"] / "evaluation.json").read_text())
    evaluation |= {"protocol": "val5k", "about": "the first 5,000", "note": "", "fid": {"mode": "clean"}}
    evaluation["model"] = {"fid": 5.5, "cf": 30.0}
    meta = modelcard.front_matter("m", config, [modelcard.read_evaluation(evaluation)])
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {"type": "fid", "name": modelcard.METRICS["fid"][1], "value": 5.5} in metrics
    with pytest.raises(ValueError, match="protocol"):
        modelcard.read_evaluation(evaluation | {"protocol": "val6k"})
    with pytest.raises(ValueError, match="FID"):
        modelcard.read_evaluation(evaluation | {"fid": {"mode": "<script>"}})


@pytest.mark.parametrize(
    "args, says",
    [
        (["--protocol", "val5k"], "needs --source"),
        (["--protocol", "val5k", "--source", "{empty}"], "no ImageNet validation images"),
        (["--protocol", "val5k", "--source", "{missing}"], "no such folder or archive"),
        (["--protocol", "val5k", "--source", "{val}", "--fid-weights", "{missing}"], "no such file"),
        (["--protocol", "store", "--source", "{val}"], "needs --store"),
    ],
)
def test_bad_input_is_refused_in_one_line_writing_nothing(world, cache, tmp_path, capsys, args, says):
    (tmp_path / "empty" / "val").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "photo.jpg").write_bytes(real_photos(1)[0][1])
    fill = {"empty": str(tmp_path / "empty"), "missing": str(tmp_path / "nothing"), "val": str(world["val"])}
    args = [a.format(**fill) for a in args]
    assert refused(["--checkpoint", world["ckpt"], "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_without_weights_or_a_network_the_protocol_refuses_before_any_work(world, cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    args = ["--checkpoint", world["ckpt"], "--protocol", "val5k", "--source", str(world["archive"])]
    assert refused([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert "--fid-weights FILE" in err and "--no-fid" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert evaluate([*args, "--out", str(tmp_path / "nofid"), "--no-fid"]) == 0  # the rest needs no Inception
    got = json.loads((tmp_path / "nofid" / "evaluation-val5k.json").read_text())
    assert "fid" not in got and "fid_unverified" not in got["model"] and got["images"] == N


def test_a_second_copy_of_an_image_is_measured_once_and_said(world, cache, tmp_path):
    photos = real_photos(3)
    for wnid in ("n01", "n02"):  # a val folder reorganised into classes, one image in both by mistake
        (tmp_path / "imnet" / "val" / wnid).mkdir(parents=True)
    (tmp_path / "imnet" / "val" / "n01" / "ILSVRC2012_val_00000001.JPEG").write_bytes(photos[0][1])
    (tmp_path / "imnet" / "val" / "n02" / "ILSVRC2012_val_00000001.JPEG").write_bytes(photos[1][1])
    (tmp_path / "imnet" / "val" / "n02" / "ILSVRC2012_val_00000002.JPEG").write_bytes(photos[2][1])
    args = ["--checkpoint", world["ckpt"], "--protocol", "val5k", "--source", str(tmp_path / "imnet")]
    assert evaluate([*args, "--out", str(tmp_path / "out"), "--no-fid"]) == 0
    got = json.loads((tmp_path / "out" / "evaluation-val5k.json").read_text())
    assert got["images"] == 2 and [p["path"] for p in got["per_image"]] == [
        "val/n01/ILSVRC2012_val_00000001.JPEG",
        "val/n02/ILSVRC2012_val_00000002.JPEG",
    ]
    assert got["skipped"] == [{"path": "val/n02/ILSVRC2012_val_00000001.JPEG",
                               "reason": "a second copy of val/n01/ILSVRC2012_val_00000001.JPEG"}]  # fmt: skip


def test_the_val_archive_and_folder_in_a_bucket_give_the_local_figures(world, cache, tmp_path, s3):
    local = run(world, tmp_path / "local", world["archive"], "val5k", "--no-fid")
    bucket = s3.bucket("imagenet")
    s3.put_tree(world["archive"].parent, "imagenet", "in")  # the archive, read in place by ranged reads
    remote = run(world, tmp_path / "remote", f"{bucket}/in/ILSVRC2012_img_val.tar", "val5k", "--no-fid")
    folder = run(world, tmp_path / "folder", s3.put_tree(world["val"], "imagenet", "v/val"), "val5k", "--no-fid")
    for got in (remote, folder):
        assert got["images"] == N
        for key in ("cf", "delta_cf", "delta_cf_images", "psnr"):
            assert got["model"][key] == pytest.approx(local["model"][key], rel=1e-9), key
