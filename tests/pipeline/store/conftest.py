import shutil

import pytest


@pytest.fixture
def source(tiny_store, tmp_path):
    """A copy of the tiny store's photo tree (3 classes of real JPEGs), to build stores from."""
    _, src = tiny_store
    shutil.copytree(src, tmp_path / "photos")
    return tmp_path / "photos"
