"""The command line, run in subprocesses on real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from xarray_nifti.cli import demo_file

EXAMPLE4D = demo_file()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xarray_nifti.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        check=False,
    )


def test_info_prints_geometry_of_a_real_file(nibabel_data: Path) -> None:
    path = nibabel_data / "anatomical.nii"
    result = run("info", str(path))
    assert result.returncode == 0, result.stderr
    img = nib.load(path)
    out = result.stdout
    assert "axcodes:   " + "".join(nib.aff2axcodes(img.affine)) in out
    assert f"{img.affine[0, 3]:10.4f}" in out
    assert "big-endian" in out  # anatomical.nii is stored big-endian
    assert "space:     aligned" in out
    assert "<xarray.Dataset>" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("info", "/no/such/file.nii"), "no such file"),
        (("plot", "{example}", "-o", "x.png", "--at", "1,2"), "--at needs three numbers"),
        (("plot", "{example}", "-o", "x.png", "--at", "a,b,c"), "--at needs three numbers"),
        (("plot", "{example}", "-o", "x.png", "--at", "-900,0,0"), "outside"),
    ],
)
def test_bad_input_gives_one_line_error(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    args = tuple(a.format(example=EXAMPLE4D) for a in args)
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_info_on_a_text_file_fails_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "notes.nii"
    junk.write_text("this is not an image\n" * 40)
    result = run("info", str(junk))
    assert result.returncode == 1
    assert "notes.nii" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help() -> None:
    for command in ("info", "convert", "plot", "demo"):
        result = run(command, "--help")
        assert result.returncode == 0
        assert "usage: xarray-nifti" in result.stdout


def test_convert_to_zarr_and_back_is_exact(tmp_path: Path) -> None:
    store = tmp_path / "scan.zarr"
    back = tmp_path / "back.nii.gz"
    assert run("convert", str(EXAMPLE4D), str(store)).returncode == 0
    result = run("convert", str(store), str(back))
    assert result.returncode == 0, result.stderr
    original, roundtrip = nib.load(EXAMPLE4D), nib.load(back)
    np.testing.assert_array_equal(np.asanyarray(original.dataobj), np.asanyarray(roundtrip.dataobj))
    np.testing.assert_allclose(roundtrip.affine, original.affine, atol=1e-5)
    assert roundtrip.get_data_dtype() == original.get_data_dtype()
    assert int(roundtrip.header["sform_code"]) == int(original.header["sform_code"])
    assert int(roundtrip.header["qform_code"]) == int(original.header["qform_code"])


def test_convert_refuses_to_overwrite_existing_store(tmp_path: Path) -> None:
    store = tmp_path / "scan.zarr"
    assert run("convert", str(EXAMPLE4D), str(store)).returncode == 0
    result = run("convert", str(EXAMPLE4D), str(store))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "view.png"
    result = run("plot", str(EXAMPLE4D), "-o", str(out), "--radiological", "--time", "1")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_runs_the_whole_story(tmp_path: Path) -> None:
    result = run("demo", "--outdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "axcodes LAS" in result.stdout
    assert "axcodes RAS" in result.stdout
    # The canonical view is described by its chunks (as many as the opened file's).
    with xr.open_dataset(EXAMPLE4D, engine="nifti", chunks={}) as opened:
        count = opened.data.data.npartitions
    assert f"(lazy: dask array, {count} chunk{'s' if count > 1 else ''})" in result.stdout
    assert "Array)" not in result.stdout
    mean_file = tmp_path / "mean_canonical.nii.gz"
    png = tmp_path / "mean_orthoview.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    # The saved mean equals nibabel's own computation on the canonical image.
    canonical = nib.as_closest_canonical(nib.load(EXAMPLE4D))
    expected = np.asanyarray(canonical.dataobj).mean(-1)
    saved = nib.load(mean_file)
    np.testing.assert_allclose(saved.get_fdata(), expected, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(saved.affine, canonical.affine, atol=1e-5)
    # The looked-up voxel value is the real one.
    ds = xr.open_dataset(EXAMPLE4D, engine="nifti")
    centre = tuple(n // 2 for n in ds.data.shape[:3])
    assert f"-> {int(ds.data.values[(*centre, 0)])}" in result.stdout


def _corrupt_in_the_middle(path: Path, tmp_path: Path) -> Path:
    """A .nii.gz whose deflate stream is damaged after the first few volumes."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(16, 16, 8, 12)).astype("int16")
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), good)
    raw = bytearray(good.read_bytes())
    middle = len(raw) * 2 // 3
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("suffix", [".zarr", ".nc", ".nii.gz"])
def test_convert_failure_leaves_no_output(tmp_path: Path, suffix: str) -> None:
    from xarray_nifti.cli import convert

    source = _corrupt_in_the_middle(tmp_path / "broken.nii.gz", tmp_path)
    target = tmp_path / f"out{suffix}"
    with pytest.raises(ValueError, match=r"broken\.nii\.gz"):
        convert(str(source), str(target))
    assert not target.exists()
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name not in ("broken.nii.gz", "good.nii.gz")
    ]
    assert leftovers == []


@pytest.mark.filterwarnings("ignore:The specified chunks separate")  # one volume per chunk
def test_convert_interrupted_keeps_existing_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xarray_nifti import writer
    from xarray_nifti.cli import convert

    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"old content")
    calls = {"n": 0}
    original = writer._encode

    def interrupt_third_block(*args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "_encode", interrupt_third_block)
    source = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 6), "int16"), np.eye(4)), source)
    with pytest.raises(KeyboardInterrupt):
        convert(str(source), str(target), chunks={"time": 1})  # six blocks
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bold.nii.gz", "out.nii.gz"]


def test_plot_time_out_of_range_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("plot", str(EXAMPLE4D), "-o", str(tmp_path / "p.png"), "--time", "5")
    assert result.returncode == 1
    assert "the image has 2 volumes" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_on_a_zarr_store_names_the_container(tmp_path: Path) -> None:
    store = tmp_path / "scan.zarr"
    assert run("convert", str(EXAMPLE4D), str(store)).returncode == 0
    result = run("info", str(store))
    assert result.returncode == 0, result.stderr
    assert "format:    zarr (nifti1 geometry)" in result.stdout
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert f"size:      {size} bytes" in result.stdout


def test_info_of_a_pair_reports_both_files(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Pair(np.ones((4, 5, 6), "int16"), np.eye(4)), tmp_path / "pair.img")
    header, image = (tmp_path / "pair.hdr").stat().st_size, (tmp_path / "pair.img").stat().st_size
    result = run("info", str(tmp_path / "pair.hdr"))
    assert result.returncode == 0, result.stderr
    assert (
        f"size:      {header + image} bytes (pair.hdr {header}, pair.img {image})" in result.stdout
    )


def test_convert_to_zarr_prints_no_expected_warnings(tmp_path: Path) -> None:
    result = run("convert", str(EXAMPLE4D), str(tmp_path / "quiet.zarr"))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert "consolidated" not in result.stderr.lower()


def test_convert_to_netcdf_without_h5py_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xarray_nifti.cli import main

    # h5netcdf records at import whether h5py is there: import it while it is.
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    status = main(["convert", str(EXAMPLE4D), str(tmp_path / "out.nc")])
    assert status == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("suffix", "module", "extra"),
    [(".nc", "h5netcdf", "netcdf"), (".nc", "h5py", "netcdf"), (".zarr", "zarr", "zarr")],
)
def test_convert_missing_dependency_raises_import_error_with_extra(
    suffix: str, module: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xarray_nifti.cli import convert

    # h5netcdf records at import whether h5py is there: import it while it is.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf'pip install "xarray-nifti\[{extra}\]"'):
        convert(str(EXAMPLE4D), str(tmp_path / f"out{suffix}"))
    assert list(tmp_path.iterdir()) == []


def test_convert_to_netcdf_with_the_netcdf_extra_is_exact(tmp_path: Path) -> None:
    result = run("convert", str(EXAMPLE4D), str(tmp_path / "out.nc"))
    assert result.returncode == 0, result.stderr
    assert run("convert", str(tmp_path / "out.nc"), str(tmp_path / "back.nii.gz")).returncode == 0
    original, back = nib.load(EXAMPLE4D), nib.load(tmp_path / "back.nii.gz")
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    assert np.allclose(back.affine, original.affine)
