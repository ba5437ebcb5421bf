"""The study plots: a measured 0 (no overflow) is a point on a linear axis, and dropped only on a log one."""

import numpy as np

from training.plots import _COLOURS, chart


def _drawn(img, colour) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels in the series' colour."""
    return np.nonzero(np.all(np.asarray(img) == colour, axis=-1))


def test_linear_axis_draws_a_zero_at_the_bottom():
    series = {"a": [(500, 0.0), (1000, 0.1), (2000, 0.3)]}
    rows, cols = _drawn(chart(series, "overflow", "steps", log_x=True, log_y=False), _COLOURS[0])
    log_rows, log_cols = _drawn(chart(series, "overflow", "steps", log_x=True), _COLOURS[0])
    left, bottom, side = 50, 400 - 50, 300  # the frame's left and lower edges, its height
    at_zero = cols <= left + 4
    assert at_zero.any() and rows[at_zero].max() >= bottom - 4  # the 0 at step 500: the lower left corner
    mid = 50 + 310  # step 1000, halfway between 500 and 2000 on a log axis
    assert abs(np.median(rows[cols == mid]) - (bottom - side / 3)) <= 6  # 0.1 of 0.3, a third up
    assert abs(np.median(log_rows[log_cols == left + 1]) - bottom) <= 6  # log: 0 gone, 0.1 is the floor


def test_every_budget_of_a_short_study_is_labelled():
    series = {"a": [(500, 1.0), (1000, 2.0), (2000, 3.0), (4000, 4.0)]}
    few = np.asarray(chart(series, "t", "steps", log_x=True, log_y=False))
    many = np.asarray(chart({"a": [(x, 1.0 + x) for x in range(1, 40)]}, "t", "steps", log_y=False))
    assert _label_columns(few) > _label_columns(many)  # four labels against the two ends


def _label_columns(a: np.ndarray) -> int:
    """Columns with dark ink in the band under the frame, where the x labels are."""
    return int((a[400 - 50 + 4 : 400 - 50 + 20] < 128).all(axis=-1).any(axis=0).sum())
