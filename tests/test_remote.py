"""Remote images over S3, against a real S3-compatible server on 127.0.0.1.

The fixture runs moto's server on a free port behind a middleware that logs
every request (``tests/s3_server.py``). That is how the tests count what a
read costs: at the server, not by trusting the client.
"""

from __future__ import annotations

import io
import json
import mmap
import pickle
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import distributed
import nibabel as nib
import numpy as np
import pytest
import s3fs  # noqa: F401  (the s3:// protocol of fsspec)
import xarray as xr

from s3_server import RequestLog, s3_endpoint
from xarray_nifti import NiftiFileChangedError

BUCKET = "nifti-test"
SHAPE = (64, 64, 32, 20)  # int16: 256 KiB per volume, 5 MiB per file
TR = 2.0


@dataclass
class S3:
    url: str
    log: RequestLog
    options: dict[str, Any]
    sizes: dict[str, int]
    data: np.ndarray
    client: Any


def _moto_auth(url: str, count: str) -> None:
    """Turn moto's credential checks on ("0") or off ("inf"): its own admin endpoint."""
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with s3_endpoint(BUCKET) as endpoint:
        client = endpoint.client
        folder = tmp_path_factory.mktemp("s3")
        data = np.random.default_rng(0).integers(0, 1000, SHAPE).astype(np.int16)
        img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 4.0, 1.0]))
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = TR
        sizes = {}
        for key in ("sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.nii.gz"):
            nib.save(img, folder / key)
            client.upload_file(str(folder / key), BUCKET, key)
            sizes[key] = (folder / key).stat().st_size
        client.put_object(
            Bucket=BUCKET,
            Key="sub-01_task-rest_bold.json",
            Body=json.dumps({"RepetitionTime": TR, "SliceTiming": [0.0, 1.0], "TaskName": "rest"}),
        )
        yield S3(endpoint.url, endpoint.log, endpoint.options, sizes, data, client)


def s3_url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def log(s3: S3) -> RequestLog:
    s3.log.clear()
    return s3.log


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.nii.gz"])
def test_open_url_matches_nibabel(s3: S3, key: str) -> None:
    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options)
    assert ds.data.shape == SHAPE
    np.testing.assert_array_equal(ds.nifti.affine, np.diag([3.0, 3.0, 4.0, 1.0]))
    assert ds.data.attrs["repetition_time"] == TR
    assert ds.data.encoding["source"] == s3_url(key)
    np.testing.assert_array_equal(ds.data.isel(time=7).values, s3.data[..., 7])
    np.testing.assert_array_equal(ds.data[10:20, ::-3, 5].values, s3.data[10:20, ::-3, 5])
    np.testing.assert_array_equal(ds.data.values, s3.data)
    ds.close()


@pytest.mark.parametrize("key", ["sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.nii.gz"])
def test_chunked_remote_read(s3: S3, key: str) -> None:
    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options, chunks={})
    assert ds.data.chunks is not None
    np.testing.assert_allclose(ds.data.mean("time").values, s3.data.mean(axis=-1))


def test_fsspec_openfile_passed_directly(s3: S3) -> None:
    import fsspec

    for key in ("sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.nii.gz"):
        open_file = fsspec.open(s3_url(key), mode="rb", **s3.options)
        ds = xr.open_dataset(open_file, engine="nifti")
        np.testing.assert_array_equal(ds.data.isel(time=3).values, s3.data[..., 3])
        # it pickles (an OpenFile reopens itself) and the copy reads
        copy = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(copy.data.isel(time=4).values, s3.data[..., 4])


def test_open_s3_file_object(s3: S3) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", **s3.options)
    with fs.open(f"{BUCKET}/sub-01_task-rest_bold.nii.gz", "rb") as f:
        ds = xr.open_dataset(f, engine="nifti")
        np.testing.assert_array_equal(ds.data.isel(time=19).values, s3.data[..., 19])


# -- what a read costs --------------------------------------------------------------------


def _volume_read_cost(s3: S3, log: RequestLog, key: str, volume: int) -> tuple[int, int, int]:
    """(bytes at open, bytes for one volume, GET requests for that volume)."""
    log.clear()
    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options)
    at_open = log.bytes_sent(key)
    log.clear()
    np.testing.assert_array_equal(ds.data.isel(time=volume).values, s3.data[..., volume])
    cost = log.bytes_sent(key), len(log.gets(key))
    ds.close()
    return at_open, *cost


def test_report_remote_read_cost(s3: S3, log: RequestLog) -> None:
    key = "sub-01_task-rest_bold.nii"
    volume_bytes = int(np.prod(SHAPE[:3])) * 2
    at_open, one_volume, requests = _volume_read_cost(s3, log, key, 3)
    print(
        f"\n{key}: file {s3.sizes[key]} B, one volume {volume_bytes} B; read at open "
        f"{at_open} B, for volume 3: {one_volume} B in {requests} GET(s) "
        f"({one_volume / s3.sizes[key]:.1%} of the file)"
    )
    key = "sub-01_task-rest_bold.nii.gz"
    at_open, first_volume, requests = _volume_read_cost(s3, log, key, 0)
    print(
        f"{key}: file {s3.sizes[key]} B; read at open {at_open} B, for volume 0: "
        f"{first_volume} B in {requests} GET(s)"
    )


def test_open_reads_only_the_header(s3: S3, log: RequestLog) -> None:
    key = "sub-01_task-rest_bold.nii"
    at_open, _, _ = _volume_read_cost(s3, log, key, 0)
    assert at_open <= 128 * 1024
    assert at_open < s3.sizes[key] / 20


def test_single_volume_reads_only_its_bytes(s3: S3, log: RequestLog) -> None:
    key = "sub-01_task-rest_bold.nii"
    volume_bytes = int(np.prod(SHAPE[:3])) * 2
    for volume in (0, 3, SHAPE[3] - 1):
        _, one_volume, requests = _volume_read_cost(s3, log, key, volume)
        assert one_volume < 2 * volume_bytes
        assert one_volume < s3.sizes[key] / 10
        assert requests <= 2


def test_first_gzip_volume_does_not_download_the_whole_file(s3: S3, log: RequestLog) -> None:
    key = "sub-01_task-rest_bold.nii.gz"
    at_open, first_volume, _ = _volume_read_cost(s3, log, key, 0)
    assert at_open < s3.sizes[key] / 10
    assert first_volume < s3.sizes[key] * 0.75


# -- errors ---------------------------------------------------------------------------------


def test_missing_object(s3: S3) -> None:
    url = s3_url("sub-99_task-rest_bold.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"sub-99_task-rest_bold\.nii\.gz"):
        xr.open_dataset(url, engine="nifti", storage_options=s3.options)


def test_missing_bucket(s3: S3) -> None:
    url = "s3://no-such-bucket/sub-01_task-rest_bold.nii"
    with pytest.raises(FileNotFoundError, match="no-such-bucket"):
        xr.open_dataset(url, engine="nifti", storage_options=s3.options)


@pytest.fixture
def iam_user(s3: S3) -> Iterator[dict[str, Any]]:
    """An IAM user allowed to read the bucket; moto checks credentials while it exists."""
    iam = boto3.client(
        "iam",
        endpoint_url=s3.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    name = "nifti-reader"
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    options = {**s3.options, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    # By default moto accepts any credentials: switch its checks on for this test only.
    _moto_auth(s3.url, "0")
    try:
        yield options
    finally:
        _moto_auth(s3.url, "inf")


def test_wrong_credentials(s3: S3, iam_user: dict[str, Any]) -> None:
    url = s3_url("sub-01_task-rest_bold.nii")
    ds = xr.open_dataset(url, engine="nifti", storage_options=iam_user)
    np.testing.assert_array_equal(ds.data.isel(time=0).values, s3.data[..., 0])
    for wrong in ({"secret": "not-the-secret"}, {"key": "AKIAIOSFODNN7NOTAUSER"}):
        with pytest.raises(PermissionError, match=r"sub-01_task-rest_bold\.nii.*credentials"):
            xr.open_dataset(url, engine="nifti", storage_options={**iam_user, **wrong})


# -- graphs carry no connections ------------------------------------------------------------


def test_remote_graph_has_no_open_files_or_sockets(s3: S3) -> None:
    import cloudpickle

    class HandleFinder(cloudpickle.Pickler):
        """Records every file, mmap or socket met while pickling."""

        def __init__(self) -> None:
            super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
            self.found: list[str] = []

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, io.IOBase | mmap.mmap | socket.socket):
                self.found.append(type(obj).__name__)
                return (type(None), ())
            return super().reducer_override(obj)

    ds = xr.open_dataset(
        s3_url("sub-01_task-rest_bold.nii.gz"),
        engine="nifti",
        storage_options=s3.options,
        chunks={},
    )
    ds.data.isel(time=0).values  # noqa: B018  (opens this process's reader)
    graph = dict(ds.data.mean("time").data.__dask_graph__())
    for task in graph.values():
        finder = HandleFinder()
        finder.dump(task)
        assert finder.found == []


# -- many threads at once -------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sub-01_task-rest_bold.nii", "sub-01_task-rest_bold.nii.gz"])
def test_threads_read_remote_file(s3: S3, key: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options)
    rng = np.random.default_rng(3)
    volumes = rng.permutation(SHAPE[3])

    def read(t: int) -> bool:
        return bool(np.array_equal(ds.data.isel(time=int(t)).values, s3.data[..., t]))

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(read, volumes))


# -- BIDS sidecar beside a remote image ---------------------------------------------------


def test_read_remote_sidecar(s3: S3) -> None:
    from xarray_nifti._bids import read_sidecar

    fields = read_sidecar(s3_url("sub-01_task-rest_bold.nii.gz"), storage_options=s3.options)
    assert fields == {"RepetitionTime": TR, "SliceTiming": [0.0, 1.0], "TaskName": "rest"}
    assert read_sidecar(s3_url("sub-02_task-rest_bold.nii.gz"), storage_options=s3.options) is None


def test_open_url_adds_remote_sidecar(s3: S3) -> None:
    ds = xr.open_dataset(
        s3_url("sub-01_task-rest_bold.nii.gz"), engine="nifti", storage_options=s3.options
    )
    assert ds.data.attrs["TaskName"] == "rest"
    assert ds.data.attrs["SliceTiming"] == [0.0, 1.0]


# -- header/image pairs --------------------------------------------------------------------------


def _upload_pair(s3: S3, folder: Any, stem: str, gz: bool) -> np.ndarray:
    data = s3.data[..., :4] * 3
    img = nib.Nifti1Pair(data, np.diag([3.0, 3.0, 4.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    ext = ".gz" if gz else ""
    nib.save(img, folder / f"{stem}.hdr{ext}")
    for part in ("hdr", "img"):
        s3.client.upload_file(str(folder / f"{stem}.{part}{ext}"), BUCKET, f"{stem}.{part}{ext}")
    return data


@pytest.mark.parametrize("gz", [False, True], ids=["pair", "pair.gz"])
@pytest.mark.parametrize("given", ["hdr", "img"])
@pytest.mark.parametrize("chunks", [None, {}], ids=["chunks=None", "chunks={}"])
def test_open_pair_from_url(
    s3: S3, tmp_path: Any, log: RequestLog, gz: bool, given: str, chunks: Any
) -> None:
    stem = f"pair-{'gz' if gz else 'raw'}-{given}-{'dask' if chunks == {} else 'lazy'}"
    data = _upload_pair(s3, tmp_path, stem, gz)
    ext = ".gz" if gz else ""
    log.clear()
    ds = xr.open_dataset(
        s3_url(f"{stem}.{given}{ext}"), engine="nifti", storage_options=s3.options, chunks=chunks
    )
    assert log.bytes_sent(f"{stem}.img{ext}") <= 2  # opening reads the header, not the data
    expected = nib.load(tmp_path / f"{stem}.hdr{ext}")
    np.testing.assert_array_equal(ds.nifti.affine, expected.affine)
    assert ds.data.encoding["source"] == s3_url(f"{stem}.{given}{ext}")
    np.testing.assert_array_equal(ds.data.isel(time=2).values, data[..., 2])
    np.testing.assert_array_equal(ds.data.values, np.asarray(expected.dataobj))
    copy = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy.data.isel(time=1).values, data[..., 1])


def test_pair_from_memory_url(tmp_path: Any) -> None:
    import fsspec

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Pair(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "m.hdr")
    fs = fsspec.filesystem("memory")
    for part in ("hdr", "img"):
        fs.pipe(f"/pairs/m.{part}", (tmp_path / f"m.{part}").read_bytes())
    ds = xr.open_dataset("memory://pairs/m.img", engine="nifti")
    np.testing.assert_array_equal(ds.data.values, data)
    np.testing.assert_array_equal(ds.nifti.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_pair_with_missing_image_object(s3: S3, tmp_path: Any) -> None:
    nib.save(nib.Nifti1Pair(s3.data[..., :2], np.eye(4)), tmp_path / "lonely.hdr")
    s3.client.upload_file(str(tmp_path / "lonely.hdr"), BUCKET, "lonely.hdr")
    with pytest.raises(FileNotFoundError, match=r"lonely\.img.*missing"):
        xr.open_dataset(s3_url("lonely.hdr"), engine="nifti", storage_options=s3.options)


# -- objects changed after opening ------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["nii", "nii.gz", "pair"])
@pytest.mark.parametrize("chunks", [None, {}], ids=["chunks=None", "chunks={}"])
@pytest.mark.parametrize("change", ["same-size", "other-size"])
def test_object_rewritten_after_open(
    s3: S3, tmp_path: Any, suffix: str, chunks: Any, change: str
) -> None:
    import gzip as gzip_module

    stem = f"changing-{suffix.replace('.', '')}-{change}-{'dask' if chunks == {} else 'lazy'}"
    old = s3.data[..., :4]
    new = (old[::-1] + 5).astype(np.int16)
    if change == "other-size":
        new = np.concatenate([new, new[..., :1]], axis=-1)

    def upload(data: np.ndarray) -> str:
        if suffix == "pair":
            nib.save(nib.Nifti1Pair(data, np.eye(4)), tmp_path / f"{stem}.hdr")
            for part in ("hdr", "img"):
                s3.client.upload_file(str(tmp_path / f"{stem}.{part}"), BUCKET, f"{stem}.{part}")
            return f"{stem}.hdr"
        raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
        if suffix == "nii.gz":  # stored blocks: the same size for the same shape
            raw = gzip_module.compress(raw, compresslevel=0, mtime=0)
        s3.client.put_object(Bucket=BUCKET, Key=f"{stem}.{suffix}", Body=raw)
        return f"{stem}.{suffix}"

    key = upload(old)
    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options, chunks=chunks)
    np.testing.assert_array_equal(ds.data.isel(time=0).values, old[..., 0])
    upload(new)
    with pytest.raises(NiftiFileChangedError, match=rf"{stem}.*changed since it was opened"):
        ds.data.values  # noqa: B018
    fresh = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options)
    np.testing.assert_array_equal(fresh.data.values, new)


def test_unpickled_copy_checks_the_version_seen_at_open(s3: S3) -> None:
    key = "pickled-then-changed.nii"
    s3.client.put_object(
        Bucket=BUCKET, Key=key, Body=nib.Nifti1Image(s3.data[..., :2], np.eye(4)).to_bytes()
    )
    ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options)
    payload = pickle.dumps(ds)
    changed = (s3.data[..., :2] + 1).astype(np.int16)
    s3.client.put_object(
        Bucket=BUCKET, Key=key, Body=nib.Nifti1Image(changed, np.eye(4)).to_bytes()
    )
    with pytest.raises(NiftiFileChangedError, match=r"ETag|version"):
        pickle.loads(payload).data.values  # noqa: B018


# -- a cluster reading one remote .nii.gz ---------------------------------------------------


def test_two_workers_fetch_compressed_bytes_at_most_about_twice(s3: S3, log: RequestLog) -> None:
    import dask

    key = "sub-01_task-rest_bold.nii.gz"
    volume = int(np.prod(SHAPE[:3])) * 2
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        with dask.config.set({"array.chunk-size": f"{2 * volume}B"}):  # 10 tasks
            ds = xr.open_dataset(s3_url(key), engine="nifti", storage_options=s3.options, chunks={})
        assert len(ds.data.chunks[3]) == SHAPE[3] // 2
        log.clear()
        total = float(ds.data.sum(dtype="float64").compute())
    assert total == float(s3.data.astype(np.float64).sum())
    fetched = log.bytes_sent(key)
    print(f"\n{key}: {s3.sizes[key]} B on S3, {fetched} B fetched by 2 workers")
    # One worker inflates it and the other asks that one; dask's task order (last
    # chunk first) can make the owner restart earlier chunks from checkpoints,
    # fetching those bytes again: at most about twice in total.
    assert fetched <= 2.1 * s3.sizes[key]
