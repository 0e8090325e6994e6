"""Which TR a header stores for a time coordinate, and whether it can store it exactly.

NIfTI describes a time axis by a start (``toffset``) and a step (``pixdim[4]``),
so only evenly spaced, increasing times survive a write. The writer (for the
header and its warning) and ``.nifti.zooms`` share this rule, so that the
zooms always show the TR that the header gets.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["time_step"]


def time_step(times: np.ndarray | None, repetition_time: float | None) -> tuple[float | None, bool]:
    """The TR a header stores for volumes at ``times`` (s), and whether they are evenly spaced.

    Evenly spaced, increasing times give their step (the ``repetition_time``
    attribute while it is the same step). Other times (scrubbed or reordered
    volumes) cannot be stored: they give the ``repetition_time`` attribute,
    else the smallest step.

    Examples
    --------
    >>> time_step(np.array([0.0, 2.0, 4.0]), None)
    (2.0, True)
    >>> time_step(np.array([20.0, 8.0, 60.0]), 2.0)
    (2.0, False)
    """
    if times is None or len(times) < 2 or not np.all(np.isfinite(times)):
        return repetition_time, True
    steps = np.diff(np.asarray(times, dtype=np.float64))
    first = float(steps[0])
    if first > 0 and np.allclose(steps, first, rtol=1e-6, atol=0):
        if repetition_time is not None and math.isclose(first, repetition_time, rel_tol=1e-6):
            return repetition_time, True
        return first, True
    if repetition_time is not None and repetition_time > 0:
        return repetition_time, False
    nonzero = np.abs(steps[steps != 0])
    return (float(nonzero.min()) if nonzero.size else repetition_time), False
