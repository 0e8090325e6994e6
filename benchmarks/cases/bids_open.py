"""Opening a whole BIDS dataset as a DataTree against reading its headers with nibabel.

Generates a BIDS dataset at run time (subjects × two sessions × four BOLD
runs and a T1w, with JSON sidecars at the top level and beside every BOLD
run), then times ``xr.open_datatree(root, engine="nifti")`` -- listing,
sidecars, one header read per image, no voxel data -- against
``nib.load(path)`` and its ``header`` and ``affine`` for every image (paths
known in advance, no sidecars), interleaved, best of ``--repeat`` runs, after
all imports. The target is ours ≤ 2× nibabel. Two more rows per dataset show
where the time goes: the same images opened one by one with the backend (no
tree), and the listing alone (``xarray_nifti.bids_files``).

The ``.nii.gz`` dataset is also served from S3 by moto's server on 127.0.0.1
(``tests/s3_server.py``, in this process; it counts what each request
sends): the tree of ``s3://...`` against nibabel reading every header
through fsspec one after the other (``fs.open`` and
``Nifti1Image.from_stream``), and the requests and bytes that one opening
costs at the server on either side.

Every leaf is checked against nibabel (shape, affine, and the voxel values of
a few leaves): the script exits with status 1 if a value differs or a case
crashes; speed targets are reported, never asserted.

Usage::

    python benchmarks/cases/bids_open.py            # 200 images per dataset
    python benchmarks/cases/bids_open.py --quick    # 60 images (< 30 s)
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import traceback
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import dask.array  # noqa: F401  (import cost paid before any timing)
import nibabel as nib
import numpy as np
import xarray as xr
from _common import best_of, load, report

import xarray_nifti
from xarray_nifti.backend import NiftiBackendEntrypoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the S3 server

TARGET_RATIO = 2.0
BUCKET = "bids-open"
BACKEND = NiftiBackendEntrypoint()
RUNS = 4  # BOLD runs per session; each session also has a T1w
SESSIONS = ("1", "2")
BOLD_SHAPE = (24, 24, 12, 8)
T1_SHAPE = (32, 32, 24)


def make_dataset(root: Path, n_images: int, extension: str) -> list[Path]:
    """Write a BIDS dataset of about ``n_images`` images; return their paths."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "benchmark", "BIDSVersion": "1.9.0"})
    )
    (root / "task-rest_bold.json").write_text(
        json.dumps({"RepetitionTime": 2.0, "TaskName": "rest", "EchoTime": 0.03})
    )
    rng = np.random.default_rng(0)
    bold = nib.Nifti1Image(rng.integers(0, 1000, BOLD_SHAPE).astype(np.int16), np.eye(4))
    bold.header.set_xyzt_units("mm", "sec")
    bold.header["pixdim"][4] = 2.0
    anat = nib.Nifti1Image(
        rng.integers(0, 1000, T1_SHAPE).astype(np.int16), np.diag([1, 1, 1.2, 1])
    )
    per_subject = len(SESSIONS) * (RUNS + 1)
    subjects = [f"{n:02d}" for n in range(1, max(1, round(n_images / per_subject)) + 1)]
    rows = ["participant_id\tage"]
    paths = []
    for subject in subjects:
        rows.append(f"sub-{subject}\t{20 + int(subject)}")
        for session in SESSIONS:
            folder = root / f"sub-{subject}" / f"ses-{session}"
            prefix = f"sub-{subject}_ses-{session}"
            (folder / "func").mkdir(parents=True)
            (folder / "anat").mkdir()
            for run in range(1, RUNS + 1):
                path = folder / "func" / f"{prefix}_task-rest_run-{run}_bold{extension}"
                nib.save(bold, path)
                path.with_name(path.name.split(".")[0] + ".json").write_text(
                    json.dumps({"SliceTiming": [0.0, 0.5, 1.0, 1.5], "AcquisitionTime": "10:00"})
                )
                paths.append(path)
            path = folder / "anat" / f"{prefix}_T1w{extension}"
            nib.save(anat, path)
            paths.append(path)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return paths


def ours(root: Path, chunks: Any, default_indexes: bool = True) -> xr.DataTree:
    return xr.open_datatree(
        root, engine="nifti", chunks=chunks, create_default_indexes=default_indexes
    )


def open_each(paths: list[Path]) -> list[xr.Dataset]:
    """Each image opened on its own by the backend, without the sidecar JSON."""
    return [BACKEND.open_dataset(str(path), sidecar=False) for path in paths]


def nibabel_headers(paths: list[Path]) -> list[Any]:
    headers = []
    for path in paths:
        img: Any = nib.load(path)  # nib.load itself, as timed; Any as with load()
        headers.append((img.header, img.affine))
    return headers


def nibabel_remote_headers(fs: Any, keys: list[str]) -> list[Any]:
    """What nibabel does for a remote image: open it with fsspec, parse the header."""
    headers = []
    for key in keys:
        with fs.open(key, mode="rb", block_size=1 << 16, cache_type="readahead") as raw:
            stream = gzip.GzipFile(fileobj=raw) if key.endswith(".gz") else raw
            img = nib.Nifti1Image.from_stream(stream)
            headers.append((img.header, img.affine))
    return headers


def check(root: Path, paths: list[Path], chunks: Any, tree: xr.DataTree | None = None) -> list[str]:
    """What differs between the tree of ``root`` (or ``tree``) and nibabel (empty: all agree)."""
    tree = ours(root, chunks) if tree is None else tree
    table = xarray_nifti.bids_files(root)
    errors = []
    if sorted(table.path) != sorted(map(str, paths)):
        errors.append(f"bids_files lists {len(table)} images, {len(paths)} were written")
    for n, row in enumerate(table.itertuples()):
        leaf = tree[row.tree_path].to_dataset()
        img = load(row.path)
        if leaf.data.shape != img.shape:
            errors.append(f"{row.path}: shape {leaf.data.shape} != {img.shape}")
        elif not np.allclose(leaf.nifti.affine, img.affine):
            errors.append(f"{row.path}: affine differs")
        elif n % 50 == 0 and not np.array_equal(leaf.data.values, img.get_fdata()):
            errors.append(f"{row.path}: voxel values differ")
    if tree.attrs.get("Name") != "benchmark":
        errors.append("dataset_description.json not in the root's attrs")
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run every case, print a markdown table, return 1 if a value or a case failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 images, for CI (< 30 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per timing (best kept)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 5)
    n_images = 60 if args.quick else 200
    rows: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-bids-") as tmp:
        for extension in (".nii.gz", ".nii"):
            root = Path(tmp) / f"ds{extension.replace('.', '-')}"
            paths = make_dataset(root, n_images, extension)
            for label, chunks, indexes in (
                ("chunks=None", None, True),
                ("chunks={}", {}, True),
                # The leaves carry their indexes: xarray's extra pass over the tree adds none.
                ("chunks=None, create_default_indexes=False", None, False),
            ):
                case = f"open_datatree, {len(paths)} × {extension}, {label}"
                try:
                    tree = ours(root, chunks, indexes)
                    failures += [f"{case}: {e}" for e in check(root, paths, chunks, tree)]
                    if not indexes and not tree.identical(ours(root, chunks)):
                        failures.append(f"{case}: differs from the tree with default indexes")
                    del tree
                    times = best_of(
                        repeat,
                        {
                            "ours": partial(ours, root, chunks, indexes),
                            "nibabel": partial(nibabel_headers, paths),
                        },
                    )
                except Exception:
                    failures.append(f"{case}: crashed\n{traceback.format_exc()}")
                    rows.append(f"| {case} | FAILED | | | ≤ {TARGET_RATIO}× | no |")
                    continue
                ratio = times["ours"] / times["nibabel"]
                met = "yes" if ratio <= TARGET_RATIO else "no"
                rows.append(
                    f"| {case} | {times['ours']:.3f} s | {times['nibabel']:.3f} s "
                    f"| {ratio:.2f}× | ≤ {TARGET_RATIO}× | {met} |"
                )
            # Where the time goes: the same images opened one by one, and the listing alone.
            parts = best_of(
                repeat,
                {
                    "images": partial(open_each, paths),
                    "listing": partial(xarray_nifti.bids_files, root),
                    "nibabel": partial(nibabel_headers, paths),
                },
            )
            for part, label in (
                ("images", "open_dataset of each image, no tree"),
                ("listing", "bids_files (listing, no header read)"),
            ):
                rows.append(
                    f"| {label}, {len(paths)} × {extension} | {parts[part]:.3f} s "
                    f"| {parts['nibabel']:.3f} s | {parts[part] / parts['nibabel']:.2f}× "
                    "| (breakdown) | |"
                )
        try:
            rows += remote_rows(Path(tmp) / "ds-nii-gz", repeat, failures)
        except Exception:
            failures.append(f"open_datatree on S3: crashed\n{traceback.format_exc()}")
            rows.append(f"| open_datatree on S3 | FAILED | | | ≤ {TARGET_RATIO}× | no |")
    return report(rows, "nibabel (nib.load: header, affine)", failures)


def _requests(entries: list[dict[str, Any]]) -> str:
    """``"201 GET (1.2 MB), 0 HEAD"``: what the server was asked for, and sent."""
    counts = Counter(e["method"] for e in entries)
    sent = sum(e["bytes"] for e in entries if e["method"] == "GET")
    others = "".join(f", {n} {m}" for m, n in sorted(counts.items()) if m not in ("GET", "HEAD"))
    return f"{counts['GET']} GET ({sent / 1e3:.0f} kB), {counts['HEAD']} HEAD{others}"


def remote_rows(root: Path, repeat: int, failures: list[str]) -> list[str]:
    """The tree of ``root`` served by moto's S3 server, against nibabel through fsspec."""
    import s3fs  # type: ignore[import-untyped]

    from s3_server import s3_endpoint

    paths = sorted(p for p in root.rglob("*.nii.gz"))
    with s3_endpoint(BUCKET) as endpoint:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                key = f"ds/{path.relative_to(root).as_posix()}"
                endpoint.client.upload_file(str(path), BUCKET, key)
        url, options = f"s3://{BUCKET}/ds", endpoint.options
        fs = s3fs.S3FileSystem(**options)
        keys = [f"{BUCKET}/ds/{p.relative_to(root).as_posix()}" for p in paths]
        case = f"open_datatree, {len(paths)} × .nii.gz on S3 (moto, 127.0.0.1)"

        def remote() -> xr.DataTree:
            return xr.open_datatree(url, engine="nifti", storage_options=options)

        def nibabel() -> list[Any]:
            fs.invalidate_cache()  # as a fresh process would: nothing known yet
            return nibabel_remote_headers(fs, keys)

        endpoint.log.clear()
        tree = remote()
        ours_requests = list(endpoint.log.entries)
        endpoint.log.clear()
        nibabel()
        nibabel_requests = list(endpoint.log.entries)
        local = xr.open_datatree(root, engine="nifti")
        for leaf in local.leaves:
            if "data" in leaf.data_vars:
                relative = Path(leaf.data.encoding["source"]).relative_to(root).as_posix()
                if tree[leaf.path].data.encoding["source"] != f"{url}/{relative}":
                    failures.append(f"{case}: {leaf.path} has another source")
        # The remote leaves are checked against nibabel's reading of the local copies.
        failures += [f"{case}: {e}" for e in check(root, paths, None, tree=tree)]
        times = best_of(repeat, {"ours": remote, "nibabel": nibabel})
    ratio = times["ours"] / times["nibabel"]
    met = "yes" if ratio <= TARGET_RATIO else "no"
    return [
        f"| {case} | {times['ours']:.3f} s | {times['nibabel']:.3f} s "
        f"| {ratio:.2f}× | ≤ {TARGET_RATIO}× | {met} |",
        f"| requests at the server for one opening, {len(paths)} × .nii.gz on S3 "
        f"| {_requests(ours_requests)} | {_requests(nibabel_requests)} | | (breakdown) | |",
    ]


if __name__ == "__main__":
    sys.exit(main())
