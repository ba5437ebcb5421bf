"""Category conversion and its inverse: paper values, round trips, ties, table build, errors, JIT switch."""

import numpy as np
import pytest
import torch

import kernels
from kernels import bins
from kernels.gamut import CATEGORY_MATRIX, CENTERS, CENTERS_F64, Q
from kernels.jit import python_version
from kernels.zhang import reference_bins


def brute_nearest(ab: np.ndarray) -> np.ndarray:
    d2 = ((ab[:, None, :].astype(np.float64) - CENTERS_F64[None]) ** 2).sum(-1)  # (P, Q)
    return d2.argmin(axis=1)  # first minimum: lowest index on a tie


def test_centers_match_zhang_release():
    from benchmarks.photos import zhang_centers

    centers = zhang_centers()
    if centers is None:
        pytest.skip("Zhang et al.'s released bin centers are not present")
    assert np.array_equal(np.load(centers), CENTERS)


@pytest.mark.parametrize("ab,q", [((0, 0), 120), ((-30, 30), 72), ((3, -3), 120), ((10, 0), 139), ((-30, 0), 69)])
def test_figure_3_values(ab, q):
    assert kernels.encode_ab(np.array(ab, dtype=np.float64)) == q
    assert kernels.encode_ab(torch.tensor(ab, dtype=torch.float64)).item() == q


def test_decode_encode_round_trip():
    q = np.arange(Q)
    ab = kernels.decode_bins(q)
    assert ab.dtype == np.float32 and ab.shape == (Q, 2)
    assert np.array_equal(ab, CENTERS)
    assert np.array_equal(kernels.encode_ab(ab), q)
    assert np.array_equal(kernels.decode_bins(q.reshape(1, Q, 1)).shape, (1, Q, 1, 2))
    assert np.array_equal(kernels.decode_bins(torch.arange(Q)).numpy(), CENTERS)


def test_category_matrix_is_eq_5_and_6():
    cells = CATEGORY_MATRIX.ravel()
    assert (cells >= 0).sum() == Q and (cells == -1).sum() == cells.size - Q
    for q, (a, b) in enumerate(CENTERS):
        assert cells[22 * (a // 10 + 9) + (b // 10 + 11)] == q  # Eq. 5, index as printed in the paper


def test_cell_candidates_give_the_full_search_in_every_cell():
    """In every grid cell (those without a center are searched through their candidates only): the nearest
    center wherever the gap is positive, and a gap that never exceeds the true one."""
    from kernels.gamut import A_MIN, B_MIN, GRID, N_A, N_B

    rng = np.random.default_rng(1)
    pts = []
    for row in range(N_A):
        for col in range(N_B):
            a0, b0 = A_MIN + row * GRID, B_MIN + col * GRID
            pts.append(rng.uniform((a0 - 5, b0 - 5), (a0 + 5, b0 + 5), (300, 2)))
            half = np.arange(-5.0, 5.01, 1.25)  # borders, corners and midpoints: ties between centers
            pts.append(np.stack(np.meshgrid(a0 + half, b0 + half), -1).reshape(-1, 2))
    ab = np.concatenate(pts)
    d2 = np.sort(((ab[:, None] - CENTERS_F64[None]) ** 2).sum(-1), axis=1)
    got = np.array([bins.nearest_bin(a, b, CATEGORY_MATRIX, CENTERS_F64) for a, b in ab])
    sure = got[:, 1] > 0
    assert sure.mean() > 0.9
    assert np.array_equal(got[sure, 0], brute_nearest(ab[sure]))
    assert (got[:, 1] <= d2[:, 1] - d2[:, 0] + 1e-9).all()


def test_encode_ab_is_nearest_center_with_lowest_index_ties():
    rng = np.random.default_rng(0)
    ab = np.concatenate(
        [
            rng.uniform(-130, 130, (20000, 2)),  # inside and far outside the gamut
            rng.integers(-12, 12, (5000, 2)) * 5.0,  # cell borders and corners: exact ties
            np.array([[5.0, 0.0], [1e6, -1e6], [-5.0, -5.0], [105.0, -95.0]]),
        ]
    )
    assert np.array_equal(kernels.encode_ab(ab), brute_nearest(ab))
    assert np.array_equal(kernels.encode_ab(ab.astype(np.float32)), brute_nearest(ab.astype(np.float32)))
    assert np.array_equal(kernels.encode_ab(torch.from_numpy(ab)).numpy(), brute_nearest(ab))
    assert kernels.encode_ab(np.array([5.0, 0.0])) == 120  # equidistant from q 120 (0, 0) and 139 (10, 0)


def test_encode_bins_on_real_photos_equals_zhang(photos):
    q = kernels.encode_bins(photos)
    assert q.dtype == np.int16 and q.shape == photos.shape[:-1]
    assert np.array_equal(q, reference_bins(photos))
    assert np.array_equal(q[:, ::2, 1::3], kernels.encode_bins(photos[:, ::2, 1::3]))  # strided input


def test_encode_targets_gives_the_weight_of_each_category(photos):
    w = np.random.default_rng(0).uniform(0.5, 2, Q).astype(np.float32)
    q, wq = kernels.encode_targets(photos, w)
    assert wq.dtype == np.float32 and np.array_equal(wq, w[q])
    qt, wt = kernels.encode_targets(torch.from_numpy(photos), torch.from_numpy(w))
    assert np.array_equal(qt.numpy(), q) and np.array_equal(wt.numpy(), wq)
    w[q.ravel()[0]] += 1  # the same array changed in place: the cached pair table must not be reused
    q2, wq2 = kernels.encode_targets(photos, w)
    assert np.array_equal(q2, q) and np.array_equal(wq2, w[q]) and not np.array_equal(wq2, wq)


def test_table_with_wide_margin_falls_back_to_reference_and_agrees():
    """A wide margin sends ~1/25 of all colours through the Zhang reference: same table either way."""
    exact, n_default = bins.build_rgb_table()
    wide, n_wide = bins.build_rgb_table(margin=2.0)
    assert n_default == 0 and n_wide > 100_000
    assert np.array_equal(exact, wide)


def test_compressed_table_equals_flat_table(all_colours):
    flat, _ = bins.build_rgb_table()
    q = np.empty(len(all_colours), np.int16)
    w = np.empty(len(all_colours), np.float32)
    weights = np.arange(1, Q + 1, dtype=np.float32)
    codes, pairs = bins.rgb_table()[0], bins.pair_table(weights)
    bins.gather(all_colours.reshape(-1), codes, pairs, q.view(np.uint16), w.view(np.uint32), 2)
    assert np.array_equal(q, flat)
    assert np.array_equal(w, weights[flat])
    one = np.empty(1, np.int16)  # fewer pixels than a chunk, and than threads
    bins.gather(all_colours[-1], codes, pairs, one.view(np.uint16), w[:0].view(np.uint32), 4)
    assert one[0] == flat[-1]
    odd = np.empty(bins.CHUNK * 3 + 7, np.int16)  # a last chunk that is not full, split over 3 threads
    bins.gather(all_colours[: len(odd)].reshape(-1), codes, pairs, odd.view(np.uint16), w[:0].view(np.uint32), 3)
    assert np.array_equal(odd, flat[: len(odd)])


def test_jit_and_python_agree():
    rng = np.random.default_rng(1)
    ab = np.concatenate([rng.uniform(-120, 120, (300, 2)), np.array([[5.0, 0.0], [-115.0, 95.0]])])
    out_jit, out_py = np.empty(len(ab), np.int16), np.empty(len(ab), np.int16)
    bins.encode_ab_kernel(ab, CATEGORY_MATRIX, CENTERS_F64, out_jit)
    python_version(bins.encode_ab_kernel)(ab, CATEGORY_MATRIX, CENTERS_F64, out_py)
    assert np.array_equal(out_jit, out_py)
    rgb = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    from kernels.lab import LINEAR, WHITE_D65, XYZ_FROM_RGB, rgb_to_lab_kernel

    lab_jit, lab_py = np.empty((200, 3), np.float32), np.empty((200, 3), np.float32)
    rgb_to_lab_kernel(rgb, LINEAR, XYZ_FROM_RGB, WHITE_D65, lab_jit)
    python_version(rgb_to_lab_kernel)(rgb, LINEAR, XYZ_FROM_RGB, WHITE_D65, lab_py)
    assert np.array_equal(lab_jit, lab_py)
    weights = rng.uniform(0.5, 2, Q).astype(np.float32)
    q_jit, q_py = np.empty(200, np.int16), np.empty(200, np.int16)
    w_jit, w_py = np.empty(200, np.float32), np.empty(200, np.float32)
    args = rgb.reshape(-1), bins.rgb_table()[0], bins.pair_table(weights)
    bins.gather(*args, q_jit.view(np.uint16), w_jit.view(np.uint32), 2)
    python_version(bins.gather)(*args, q_py.view(np.uint16), w_py.view(np.uint32), 2)
    assert np.array_equal(q_jit, q_py) and np.array_equal(w_jit, w_py)


@pytest.mark.parametrize(
    "fn,arg,err",
    [
        (kernels.encode_bins, np.zeros((4, 4, 3), np.float32), TypeError),
        (kernels.encode_bins, np.zeros((4, 4, 3), np.int64), TypeError),
        (kernels.encode_bins, [[0, 0, 0]], TypeError),
        (kernels.encode_bins, np.zeros((4, 4), np.uint8), ValueError),
        (kernels.encode_bins, np.zeros((4, 4, 4), np.uint8), ValueError),
        (kernels.encode_bins, torch.zeros(4, 3), TypeError),
        (kernels.encode_bins, torch.zeros(4, 4, dtype=torch.uint8), ValueError),
        (kernels.rgb_to_lab, np.zeros((4, 3), np.float64), TypeError),
        (kernels.rgb_to_lab, np.zeros((3, 4), np.uint8), ValueError),
        (kernels.decode_bins, np.array([0, Q]), ValueError),
        (kernels.decode_bins, np.array([-1, 5]), ValueError),
        (kernels.decode_bins, np.array([1.0, 2.0]), TypeError),
        (kernels.decode_bins, torch.tensor([0, 400]), ValueError),
        (kernels.decode_bins, torch.tensor([0.5]), TypeError),
        (kernels.encode_ab, np.zeros((4, 2), np.int32), TypeError),
        (kernels.encode_ab, np.zeros((4, 3), np.float32), ValueError),
        (kernels.encode_ab, np.array([[np.nan, 0.0]]), ValueError),
    ],
)
def test_bad_input_raises_clear_errors(fn, arg, err):
    with pytest.raises(err, match=r"must|contains"):
        fn(arg)


def test_encode_targets_rejects_bad_weights(photos):
    with pytest.raises(ValueError, match="shape"):
        kernels.encode_targets(photos, np.ones(312, np.float32))
    with pytest.raises(TypeError, match="float32"):
        kernels.encode_targets(photos, np.ones(Q, np.float64))


def test_empty_input():
    assert kernels.encode_bins(np.zeros((0, 3), np.uint8)).shape == (0,)
    assert kernels.decode_bins(np.zeros((0,), np.int16)).shape == (0, 2)
