"""Orthogonal views rendered to PNG and checked pixel by pixel."""

from __future__ import annotations

import io
import os
import subprocess
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
    import matplotlib.image

    buffer = io.BytesIO()
    # at the figure's own dpi, so that axes extents are in the PNG's pixels
    figure.savefig(buffer, format="png")  # type: ignore[attr-defined]
    buffer.seek(0)
    return matplotlib.image.imread(buffer)


def _panel_pixels(figure: object, panel: int) -> np.ndarray:
    """Grey levels of one panel's image area in the rendered PNG (row 0 at the top)."""
    png = _render(figure)
    ax = figure.axes[panel]  # type: ignore[attr-defined]
    box = ax.get_window_extent()  # pixels from the bottom left, after the render
    height = png.shape[0]
    rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
    columns = slice(int(box.x0) + 2, int(box.x1) - 2)
    return png[rows, columns, :3].mean(axis=-1)


def _bright_side(pixels: np.ndarray) -> str:
    half = pixels.shape[1] // 2
    return "left" if pixels[:, :half].mean() > pixels[:, half:].mean() else "right"


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


@pytest.mark.parametrize("flip_x", [False, True])
def test_rendered_png_has_the_subject_left_on_the_screen_left_in_neurological(flip_x: bool) -> None:
    affine = np.diag([-2.0 if flip_x else 2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [20.0 if flip_x else -20.0, -16.0, -12.0]
    image = _asymmetric(affine)
    for panel in (1, 2):  # coronal and axial show left-right
        neuro = _panel_pixels(image.nifti.plot(convention="neurological"), panel)
        radio = _panel_pixels(image.nifti.plot(convention="radiological"), panel)
        assert _bright_side(neuro) == "left"
        assert _bright_side(radio) == "right"


@pytest.mark.parametrize("dim", ["i", "j", "k"])
def test_a_plane_of_a_grid_is_drawn_as_its_one_view(dim: str) -> None:
    # an oblique-free but permuted and flipped grid: i runs along z, j along -x, k along y
    affine = np.array(
        [[0.0, -2.0, 0.0, 20.0], [0.0, 0.0, 2.0, -16.0], [2.0, 0.0, 0.0, -12.0], [0, 0, 0, 1]]
    )
    image = _asymmetric(affine)
    plane = image.isel({dim: 5})
    titles = {"i": "axial", "j": "sagittal", "k": "coronal"}
    figure = plane.nifti.plot()
    assert [ax.get_title() for ax in figure.axes[:-1]] == [titles[dim]]
    if dim != "j":  # the sagittal view has no left and right
        assert _bright_side(_panel_pixels(figure, 0)) == "left"
        radio = plane.nifti.plot(convention="radiological")
        assert _bright_side(_panel_pixels(radio, 0)) == "right"
    full = image.nifti.plot(at=plane.nifti.voxel_to_world(3, 4, 0))
    view = full.axes[["sagittal", "coronal", "axial"].index(titles[dim])]
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), view.images[0].get_array())


def test_time_outside_the_series_names_the_valid_range(nibabel_data) -> None:
    ds = xr.open_dataset(nibabel_data / "example4d.nii.gz", engine="nifti")
    with pytest.raises(IndexError, match=r"time=500: the image has 2 volumes \(0\.\.1\)"):
        ds.data.nifti.plot(time=500)
    with pytest.raises(IndexError, match=r"0\.\.1"):
        ds.data.nifti.plot(time=-1)
    with pytest.raises(ValueError, match="no time dim"):
        ds.data.isel(time=0).nifti.plot(time=1)


def test_a_line_of_voxels_is_not_a_plane(nibabel_data) -> None:
    ds = xr.open_dataset(nibabel_data / "anatomical.nii", engine="nifti")
    with pytest.raises(ValueError, match="3-D grid or a 2-D plane"):
        ds.data.isel(i=3, j=4).nifti.plot()


def test_plot_keeps_the_users_matplotlib_backend(nibabel_data, tmp_path) -> None:
    script = (
        "import matplotlib, xarray as xr, xarray_nifti, sys\n"
        f"ds = xr.open_dataset({str(nibabel_data / 'anatomical.nii')!r}, engine='nifti')\n"
        "ds.data.nifti.plot().savefig(sys.argv[1])\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "views.png")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "views.png").read_bytes().startswith(b"\x89PNG")


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import xarray as xr

    from helpers import NIBABEL_DATA

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    image = xr.open_dataarray(NIBABEL_DATA / "example4d.nii.gz", engine="nifti")
    with pytest.raises(ImportError, match=r'pip install "xarray-nifti\[plot\]"'):
        image.nifti.plot()
