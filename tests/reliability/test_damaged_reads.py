"""A damaged shard met by evaluation, the quality check or training: named (shard file and image) in one line,
and nothing left behind, as the loader names it."""

import shutil

from tests.conftest import make_store


def _damage(store):
    shard = store / "L" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100:164] = bytes(b ^ 0xFF for b in data[100:164])  # inside the first chunk, before the index
    shard.write_bytes(bytes(data))


def test_evaluate_quality_and_training_name_the_damaged_shard(tmp_path, capsys):
    from pipeline.check import main as quality
    from training.evaluate import main as evaluate
    from training.run import TrainConfig, train
    from training.run import main as train_main

    good, _ = make_store(tmp_path / "a", n=8)
    train(TrainConfig(store=str(good), out=str(tmp_path / "run"), width=1 / 8, size=64, batch_size=4, steps=1,
                      holdout=0.25, eval_images=2, tensorboard=False))  # fmt: skip
    store = tmp_path / "damaged.zarr"
    shutil.copytree(good, store)
    _damage(store)
    capsys.readouterr()
    ckpt = str(tmp_path / "run" / "checkpoint-last.pt")
    out = tmp_path / "ev"
    assert evaluate(["--checkpoint", ckpt, "--store", str(store), "--split", "all", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard L/c/0/0/0" in err[0] and "image 0" in err[0], err
    assert quality([str(store), "--out", str(tmp_path / "q")]) == 1  # a FAIL report, not a crash
    report = next((tmp_path / "q").glob("*.quality.md")).read_text()
    assert "FAIL" in report and "L/c/0" in report
    capsys.readouterr()
    argv = [
        "--store",
        str(store),
        "--out",
        str(tmp_path / "newrun"),
        "--width",
        "0.125",
        "--size",
        "64",
        "--steps",
        "1",
    ]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "L/c/0/0/0" in err[0], err
    assert not (tmp_path / "newrun").exists()
