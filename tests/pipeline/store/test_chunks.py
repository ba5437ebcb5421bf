"""Shard files written from pre-encoded chunks: byte for byte what zarr-python writes, and read back by it."""

import numpy as np
import pytest
import zarr

from pipeline.store.arrays import array_codecs, crc32c
from pipeline.store.chunks import encode_images, shard_file
from pipeline.store.format import ARRAY_NDIM, shard_key

SHARD = 4


def images_of(name: str, n: int, photos: np.ndarray) -> np.ndarray:
    """Real content for each array: L from photos, bins and label with the dtypes and ranges of the store."""
    rng = np.random.default_rng(0)
    if name == "L":
        return photos[:n, ..., 0].copy()  # (n, 96, 96) uint8: a photo's red channel
    if name == "bins":
        return rng.integers(0, 313, size=(n, 24, 24)).astype(np.int16)
    return rng.integers(-1, 1000, size=n).astype(np.int16)


def zarr_array(root, name: str, images: np.ndarray, level: int = 1):
    group = zarr.open_group(root, mode="a", zarr_format=3)
    return group.create_array(
        name,
        shape=images.shape,
        dtype=images.dtype,
        chunks=(1, *images.shape[1:]),
        shards=(SHARD, *images.shape[1:]),
        fill_value=-1 if name == "label" else 0,
        **array_codecs(name, images.dtype, level).zarr_codecs(),
    )


def write_ours(root, name: str, images: np.ndarray, level: int = 1) -> None:
    blob, sizes = encode_images(array_codecs(name, images.dtype, level), images)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    chunks = [memoryview(blob)[offsets[i] : offsets[i + 1]] for i in range(len(images))]
    for k in range(-(-len(images) // SHARD)):
        path = root / shard_key(name, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shard_file(chunks[k * SHARD : (k + 1) * SHARD], SHARD))


@pytest.mark.parametrize("name", ["L", "bins", "label"])
@pytest.mark.parametrize("n", [8, 7, 1])  # whole shards, a partial last shard, a single image
def test_shard_files_equal_zarrs_own_and_read_back(name, n, photos, tmp_path):
    images = images_of(name, n, photos)
    assert images.ndim == ARRAY_NDIM[name]
    theirs, ours = tmp_path / "zarr.zarr", tmp_path / "ours.zarr"
    with zarr.config.set({"array.write_empty_chunks": True}):
        zarr_array(theirs, name, images)[:] = images
    zarr_array(ours, name, images)  # the metadata only
    write_ours(ours, name, images)
    for k in range(-(-n // SHARD)):
        assert (ours / shard_key(name, k)).read_bytes() == (theirs / shard_key(name, k)).read_bytes()
    back = zarr.open_group(ours, mode="r")[name]
    np.testing.assert_array_equal(back[:], images)
    np.testing.assert_array_equal(back[n - 1], images[n - 1])  # one chunk, through the shard index


def test_a_damaged_chunk_fails_the_read(photos, tmp_path):
    images = images_of("L", 4, photos)
    zarr_array(tmp_path, "L", images)
    write_ours(tmp_path, "L", images)
    path = tmp_path / shard_key("L", 0)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the first chunk
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_group(tmp_path, mode="r")["L"][0]


def test_shard_index_layout():
    chunks = [b"abc", b"", b"defgh"]
    data = shard_file(chunks, 4)
    index = np.frombuffer(data[8:-4], dtype="<u8").reshape(4, 2)
    assert data[:8] == b"abcdefgh"
    np.testing.assert_array_equal(index[:3], [[0, 3], [3, 0], [3, 5]])
    assert (index[3] == 2**64 - 1).all()  # absent chunk
    assert data[-4:] == crc32c(data[8:-4])
    with pytest.raises(ValueError, match="do not fit"):
        shard_file(chunks, 2)


def test_plain_zarr_reads_L_through_the_entry_point(photos, tmp_path):
    """A fresh interpreter that imports nothing of this project reads L: zarr finds the codec by its entry point."""
    import subprocess
    import sys

    images = images_of("L", 5, photos)
    zarr_array(tmp_path / "s.zarr", "L", images)
    write_ours(tmp_path / "s.zarr", "L", images)
    code = (
        "import sys, numpy, zarr; assert 'pipeline' not in sys.modules; "
        f"numpy.save({str(tmp_path / 'back.npy')!r}, zarr.open_group({str(tmp_path / 's.zarr')!r}, mode='r')['L'][:])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), images)
    meta = (tmp_path / "s.zarr" / "L" / "zarr.json").read_text()
    assert '"colorize.med_rans"' in meta


@pytest.mark.parametrize("name", ["L", "label"])
def test_shard_files_with_empty_slots_equal_zarrs_own(name, photos, tmp_path):
    """A skipped source leaves its slot empty: the same bytes as zarr-python writes when that chunk is never set."""
    images = images_of(name, 8, photos)
    present = [0, 2, 3, 6]
    theirs, ours = tmp_path / "zarr.zarr", tmp_path / "ours.zarr"
    arr = zarr_array(theirs, name, images)
    with zarr.config.set({"array.write_empty_chunks": True}):
        for i in present:
            arr[i] = images[i]
    zarr_array(ours, name, images)
    codecs = array_codecs(name, images.dtype, 1)
    chunks = [codecs.encode(images[i]) if i in present else None for i in range(8)]
    for k in range(2):
        path = ours / shard_key(name, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shard_file(chunks[k * SHARD : (k + 1) * SHARD], SHARD))
        assert path.read_bytes() == (theirs / shard_key(name, k)).read_bytes()
