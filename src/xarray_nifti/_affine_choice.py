"""Which voxel-to-world affine a parsed header gives: nibabel's rule minus unusable forms.

Kept apart from the other header checks because it is the one place that
decides geometry at open time; every replacement warns with a
:class:`NiftiHeaderWarning` naming the file, the form and what is used instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from nibabel.analyze import AnalyzeHeader
from nibabel.nifti1 import Nifti1Header
from numpy.typing import ArrayLike

from ._header import _PARSE_ERRORS, _warn

__all__ = ["choose_affine"]


def _form(getter: Callable[[], ArrayLike]) -> tuple[np.ndarray | None, str]:
    """A header form and what is wrong with it (``""`` if nothing)."""
    try:
        form = np.asarray(getter(), dtype=np.float64)
    except _PARSE_ERRORS as err:
        return None, f"is invalid ({err})"
    if form.shape != (4, 4) or not np.all(np.isfinite(form)):
        return None, "contains NaN or infinite values"
    if np.linalg.matrix_rank(form[:3, :3]) < 3:
        return form, "is singular (a zero voxel size or collinear axes)"
    return form, ""


def _choose_nifti_affine(name: str, header: Nifti1Header) -> np.ndarray:
    """nibabel's affine rule (sform, qform, zooms) after dropping unusable forms.

    An sform with NaN/inf or a singular matrix is replaced by a valid qform
    (code > 0) and its code set to 0; a singular sform without a valid qform
    is kept (the file's own geometry; mapping world to voxel positions then
    raises), a non-finite one gives way to the zooms-only affine. A qform that
    cannot be computed (impossible quaternion) or has NaN/inf is ignored.
    Each replacement warns with a :class:`NiftiHeaderWarning` naming both.
    """
    s_code, q_code = int(header["sform_code"]), int(header["qform_code"])
    q_problem = _form(header.get_qform)[1] if q_code > 0 else ""
    q_valid = q_code > 0 and not q_problem
    use_sform = False
    if s_code > 0:
        sform, s_problem = _form(header.get_sform)
        if not s_problem:
            use_sform = True
        elif q_valid:
            header["sform_code"] = 0
            _warn(
                f"{name}: the sform (sform_code = {s_code}) {s_problem}; using the qform "
                f"(qform_code = {q_code}) instead"
            )
        elif sform is not None:
            use_sform = True
            _warn(
                f"{name}: the sform (sform_code = {s_code}) {s_problem} and there is no valid "
                "qform to fall back to; it is kept, so world_to_voxel, sel(method='nearest') "
                "and resample_to will raise"
            )
        else:
            header["sform_code"] = 0
            _warn(
                f"{name}: the sform (sform_code = {s_code}) {s_problem} and there is no valid "
                "qform to fall back to; using the zooms-only affine from pixdim"
            )
    if q_code > 0 and q_problem:
        header["qform_code"] = 0
        fallback = "the sform is used" if use_sform else "using the zooms-only affine from pixdim"
        _warn(f"{name}: the qform (qform_code = {q_code}) {q_problem}; it is ignored, {fallback}")
    return np.asarray(header.get_best_affine(), dtype=np.float64)


def choose_affine(name: str, header: AnalyzeHeader, best: Callable[[], ArrayLike]) -> np.ndarray:
    """The affine to use (see :func:`_choose_nifti_affine`); never NaN/inf.

    ``best`` gives nibabel's affine of an Analyze/SPM image (SPM reads a
    ``.mat`` file beside the image); NIfTI headers follow their own rule.
    """
    if isinstance(header, Nifti1Header):
        try:
            affine = _choose_nifti_affine(name, header)
        except _PARSE_ERRORS:
            affine = np.full((4, 4), np.nan)
    else:  # Analyze/SPM: nibabel's affine (SPM reads a .mat file beside the image)
        try:
            affine = np.asarray(best(), dtype=np.float64)
        except _PARSE_ERRORS:
            affine = np.full((4, 4), np.nan)
    if affine.shape == (4, 4) and np.all(np.isfinite(affine)):
        return affine
    fallback, problem = _form(header.get_base_affine)
    if fallback is not None and not problem:
        _warn(
            f"{name}: the header's voxel-to-world affine contains NaN or infinite values; "
            "using the zooms-only affine from pixdim"
        )
        return fallback
    _warn(f"{name}: the header has no finite voxel-to-world affine; using the identity")
    return np.eye(4)
