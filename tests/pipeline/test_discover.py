import pytest

from pipeline.discover import discover, read_classes


def _tree(root, classes=("n02", "n01", "n03"), per=5):
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True)
        for k in range(per):
            (d / f"{c}_{k}.JPEG").write_bytes(b"x")
    return root


def test_labels_follow_sorted_folders_without_synsets(tmp_path):
    sources, classes = discover(_tree(tmp_path), "train")
    assert classes == ["n01", "n02", "n03"]
    assert [s.label for s in sources] == [0] * 5 + [1] * 5 + [2] * 5
    assert sources[0].path == "train/n01/n01_0.JPEG"


def test_labels_follow_synsets_and_unknown_is_minus_one(tmp_path):
    _tree(tmp_path)
    (tmp_path / "synsets.txt").write_text("n09 nine\nn03 three\nn01 one\n")
    sources, _ = discover(tmp_path, "train")
    by = {s.wnid: s.label for s in sources}
    assert by == {"n01": 2, "n02": -1, "n03": 1}


def test_class_subset_and_seeded_per_class_draw(tmp_path):
    _tree(tmp_path, per=20)
    a, _ = discover(tmp_path, "train", classes=("n03", "n01"), per_class=4, seed=7)
    b, _ = discover(tmp_path, "train", classes=("n01",), per_class=4, seed=7)
    c, _ = discover(tmp_path, "train", classes=("n01",), per_class=4, seed=8)
    assert len(a) == 8 and {s.wnid for s in a} == {"n01", "n03"}
    assert [s for s in a if s.wnid == "n01"] == b  # a subset does not change a class's draw
    assert b != c
    with pytest.raises(ValueError, match="n99"):
        discover(tmp_path, "train", classes=("n99",))


def test_hidden_files_skipped_and_symlink_loops_not_followed(tmp_path):
    _tree(tmp_path, classes=("n01",), per=2)
    (tmp_path / "train" / "n01" / ".DS_Store").write_bytes(b"")
    (tmp_path / "train" / "n01" / "loop").symlink_to(tmp_path / "train")
    sources, _ = discover(tmp_path, "train")
    assert [s.path for s in sources] == ["train/n01/n01_0.JPEG", "train/n01/n01_1.JPEG"]


def test_missing_split_and_class_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split"):
        discover(tmp_path, "val")
    f = tmp_path / "people.txt"
    f.write_text("n001 person\nn002 diver\n")
    assert read_classes(str(f)) == ("n001", "n002")
    assert read_classes("n1, n2") == ("n1", "n2")
    assert read_classes(None) is None
