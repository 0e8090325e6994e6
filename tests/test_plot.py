"""Orthogonal views rendered to PNG and checked pixel by pixel."""

from __future__ import annotations

import io
import sys

import matplotlib
import numpy as np
import pytest
import xarray as xr

import xarray_nifti

matplotlib.use("Agg")


def _asymmetric(affine: np.ndarray) -> xr.DataArray:
    """A bright block only on the subject's left (world x < 0)."""
    shape = (20, 16, 12)
    img = xarray_nifti.from_nibabel(
        __import__("nibabel").Nifti1Image(np.zeros(shape, "f4"), affine)
    ).data
    x = img.x.values
    values = np.where(x < -5, 100.0, 0.0).astype("f4")
    return img.copy(data=values)


def _render(figure: object) -> np.ndarray:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=60)  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    buffer.seek(0)
    return plt.imread(buffer)


def _axial_brightness_by_side(figure: object) -> tuple[float, float]:
    axial = figure.axes[2]  # type: ignore[attr-defined]
    image = axial.images[0].get_array()
    half = image.shape[1] // 2
    return float(np.mean(image[:, :half])), float(np.mean(image[:, half:]))


@pytest.mark.parametrize("flip_x", [False, True])
def test_left_is_on_the_left_in_neurological_and_right_in_radiological(flip_x: bool) -> None:
    affine = np.diag([-2.0 if flip_x else 2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [20.0 if flip_x else -20.0, -16.0, -12.0]
    image = _asymmetric(affine)
    neuro = image.nifti.plot(convention="neurological")
    left, right = _axial_brightness_by_side(neuro)
    assert left > right  # subject's left drawn on the screen's left
    radio = image.nifti.plot(convention="radiological")
    left, right = _axial_brightness_by_side(radio)
    assert right > left
    # The rendered PNGs are mirror images of each other in the axial panel.
    neuro_png, radio_png = _render(neuro), _render(radio)
    assert neuro_png.shape == radio_png.shape
    assert not np.array_equal(neuro_png, radio_png)


def test_plot_labels_and_crosshair(nibabel_data) -> None:
    ds = xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti")
    figure = ds.data.nifti.plot(at=(0.0, 20.0, 10.0), time=1)
    texts = [[t.get_text() for t in ax.texts] for ax in figure.axes[:3]]
    assert texts[0][:2] == ["P", "A"]
    assert texts[1][:2] == ["L", "R"]
    assert [ax.get_title() for ax in figure.axes[:3]] == ["sagittal", "coronal", "axial"]
    assert all(ax.images[0].origin == "lower" for ax in figure.axes[:3])
    assert len(figure.axes) == 4  # three views and a colour bar
    # aspect follows the voxel sizes (2.0 x 2.2 mm in the sagittal view of this scan)
    assert figure.axes[0].get_aspect() == pytest.approx(2.2 / 2.0, rel=0.05)


def test_point_outside_the_image_is_an_error(nibabel_data) -> None:
    ds = xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti")
    with pytest.raises(ValueError, match="outside"):
        ds.data.isel(time=0).nifti.plot(at=(1000.0, 0.0, 0.0))


def test_missing_matplotlib_gives_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, nibabel_data
) -> None:
    ds = xr.open_dataset(nibabel_data / "anatomical.nii", engine="nifti")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"xarray-nifti\[plot\]"):
        ds.data.nifti.plot()
