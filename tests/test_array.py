"""The lazy ``NiftiBackendArray``: region reads, indexing, pickling, laziness, file sharing."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import run_in_threads
from xarray_nifti import NiftiFileChangedError
from xarray_nifti import _readers as readers_module
from xarray_nifti import _region as region_module
from xarray_nifti import array as array_module
from xarray_nifti._region import read_region
from xarray_nifti._resolve import open_source
from xarray_nifti._source import DataLocation
from xarray_nifti.array import NiftiBackendArray

SHAPE = (6, 5, 4, 3)
DATA = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE) * 7 - 1000
SOURCES = ["nii", "nii.gz", "bytesio", "bytesio.gz"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("array")
    paths = {}
    for suffix in ("nii", "nii.gz"):
        paths[suffix] = folder / f"img.{suffix}"
        nib.save(nib.Nifti1Image(DATA, np.eye(4)), paths[suffix])
    return paths


def _open(files: dict[str, Path], kind: str, **kwargs: Any) -> xr.Dataset:
    if kind.startswith("bytesio"):
        raw = files["nii.gz" if kind.endswith(".gz") else "nii"].read_bytes()
        return xr.open_dataset(io.BytesIO(raw), engine="nifti", **kwargs)
    return xr.open_dataset(files[kind], engine="nifti", **kwargs)


@pytest.fixture(scope="module")
def datasets(files: dict[str, Path]) -> Iterator[dict[str, xr.Dataset]]:
    opened = {kind: _open(files, kind, cache=False) for kind in SOURCES}
    yield opened
    for ds in opened.values():
        ds.close()


# -- read_region on a plain byte buffer ------------------------------------------------------


def _selection(shape: tuple[int, ...]) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    def axis(n: int) -> st.SearchStrategy[tuple[int, int, int]]:
        return st.integers(1, n).flatmap(
            lambda step: st.integers(0, n - 1).flatmap(
                lambda start: st.integers(0, (n - 1 - start) // step + 1).map(
                    lambda count: (start, count, step)
                )
            )
        )

    return st.tuples(*(axis(n) for n in shape)).map(list)


@st.composite
def _region_case(draw: st.DrawFn) -> tuple[tuple[int, ...], list[tuple[int, int, int]]]:
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=5)))
    return shape, draw(_selection(shape))


@settings(max_examples=150, deadline=None)
@given(case=_region_case(), waste=st.sampled_from([1, 4]), floor=st.sampled_from([0, 8 << 20]))
def test_read_region_matches_numpy(
    case: tuple[tuple[int, ...], list[tuple[int, int, int]]], waste: int, floor: int
) -> None:
    shape, selection = case
    dtype = np.dtype(">f4")
    data = np.arange(np.prod(shape), dtype=dtype).reshape(shape, order="F")
    offset = 48
    blob = bytes(offset) + data.tobytes(order="F")
    location = DataLocation("mem", None, None, None, offset, shape, dtype, None)
    reads: list[tuple[int, int]] = []

    def read_into(start: int, out: memoryview) -> None:
        assert start >= offset
        assert start + len(out) <= len(blob)
        reads.append((start, len(out)))
        out[:] = blob[start : start + len(out)]

    old = (region_module._SPAN_WASTE, region_module._SPAN_FLOOR)
    region_module._SPAN_WASTE, region_module._SPAN_FLOOR = waste, floor
    try:
        block = read_region(read_into, location, selection)
    finally:
        region_module._SPAN_WASTE, region_module._SPAN_FLOOR = old
    key = tuple(slice(s, s + (c - 1) * k + 1, k) if c else slice(0, 0) for s, c, k in selection)
    np.testing.assert_array_equal(block, data[key])
    assert block.shape == tuple(c for _, c, _ in selection)
    starts = [start for start, _ in reads]
    assert starts == sorted(starts)  # in file order: gzip streams only move forward


# -- indexing through xarray -------------------------------------------------------------------


def _axis_key(n: int) -> st.SearchStrategy[Any]:
    steps = st.one_of(st.none(), st.integers(-3, -1), st.integers(1, 3))
    # Starts below -n with a negative step are left out: xarray's own lazy
    # indexing turns ``[-n-1::-1]`` (empty) into ``[::-1]`` for any backend
    # (xarray.core.indexing.normalize_slice), before our array sees the key.
    bound = st.one_of(st.none(), st.integers(-n, n + 2))
    return st.one_of(
        st.integers(-n, n - 1),
        st.builds(slice, bound, bound, steps),
        st.lists(st.integers(-n, n - 1), min_size=1, max_size=4).map(np.array),
    )


def _outer_expected(data: np.ndarray, key: tuple[Any, ...]) -> np.ndarray:
    out, axis = data, 0
    for k in key:
        if isinstance(k, int):
            out = np.take(out, k, axis=axis)
        elif isinstance(k, slice):
            out = out[(slice(None),) * axis + (k,)]
            axis += 1
        else:
            out = np.take(out, k, axis=axis)
            axis += 1
    return out


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(SOURCES), key=st.tuples(*(_axis_key(n) for n in SHAPE)))
def test_outer_and_basic_indexing(
    datasets: dict[str, xr.Dataset], kind: str, key: tuple[Any, ...]
) -> None:
    var = datasets[kind]["data"].variable
    np.testing.assert_array_equal(var[key].values, _outer_expected(DATA, key))


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(SOURCES),
    points=st.lists(
        st.tuples(*(st.integers(-n, n - 1) for n in SHAPE[:3])), min_size=1, max_size=6
    ),
    time=_axis_key(SHAPE[3]),
)
def test_vectorized_indexing(
    datasets: dict[str, xr.Dataset], kind: str, points: list[tuple[int, int, int]], time: Any
) -> None:
    i, j, k = (np.array(p) for p in zip(*points, strict=True))
    da = datasets[kind]["data"]
    result = da.isel(i=xr.Variable("p", i), j=xr.Variable("p", j), k=xr.Variable("p", k), time=time)
    expected = DATA[i, j, k][:, time] if not isinstance(time, int) else DATA[i, j, k, time]
    np.testing.assert_array_equal(result.transpose("p", ...).values, expected)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("dim", ["i", "j", "k", "time"])
def test_isel_each_axis(datasets: dict[str, xr.Dataset], kind: str, dim: str) -> None:
    da = datasets[kind]["data"]
    axis = da.get_axis_num(dim)
    n = SHAPE[axis]
    for key in (0, n - 1, -1, slice(1, None), slice(None, None, -1), slice(-1, 0, -2), [2, 0]):
        expected = DATA[(slice(None),) * axis + (key,)]
        np.testing.assert_array_equal(da.isel({dim: key}).values, expected)


def test_full_read_of_every_source(datasets: dict[str, xr.Dataset]) -> None:
    for ds in datasets.values():
        np.testing.assert_array_equal(ds["data"].values, DATA)
        assert ds["data"].dtype == DATA.dtype


def test_backend_array_directly(files: dict[str, Path]) -> None:
    from xarray.core import indexing

    array = NiftiBackendArray(open_source(files["nii.gz"]).data)
    assert array.shape == SHAPE
    assert array.dtype == np.int32
    key = indexing.BasicIndexer((1, slice(None, None, -2), slice(1, 3), -1))
    np.testing.assert_array_equal(array[key], DATA[1, ::-2, 1:3, -1])
    key2 = indexing.OuterIndexer((np.array([3, 0, 3]), slice(None), 2, np.array([2, 0])))
    np.testing.assert_array_equal(array[key2], DATA[[3, 0, 3]][:, :, 2][:, :, [2, 0]])
    empty = indexing.BasicIndexer((slice(3, 3), slice(None), 0, 0))
    assert array[empty].shape == (0, SHAPE[1])
    array.close()


# -- pickling --------------------------------------------------------------------------------


def _assert_no_open_handle(payload: bytes) -> None:
    for marker in (b"BufferedReader", b"mmap", b"_io", b"GzipStream", b"zlib"):
        assert marker not in payload, marker


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("cache", [True, False])
def test_pickle_before_and_after_reads(files: dict[str, Path], kind: str, cache: bool) -> None:
    with _open(files, kind, cache=cache) as ds:
        before = pickle.dumps(ds)
        if not kind.startswith("bytesio"):
            _assert_no_open_handle(before)
        ds["data"].isel(time=1).values  # noqa: B018  (opens the shared reader)
        after = pickle.dumps(ds)
        var_after = pickle.dumps(ds["data"].variable)
        if not kind.startswith("bytesio"):
            _assert_no_open_handle(after)
            _assert_no_open_handle(var_after)
        lazy_after = pickle.dumps(ds.isel(k=slice(1, 3)))
    for payload in (before, after, lazy_after):
        restored = pickle.loads(payload)
        expected = DATA if payload is not lazy_after else DATA[:, :, 1:3]
        np.testing.assert_array_equal(restored["data"].values, expected)
        np.testing.assert_array_equal(restored["data"].isel(i=-1).values, expected[-1])
        restored.close()
    variable = pickle.loads(var_after)
    np.testing.assert_array_equal(variable.values, DATA)


def test_pickled_copy_survives_closing_the_original(files: dict[str, Path]) -> None:
    ds = _open(files, "nii.gz", cache=False)
    ds["data"][0, 0, 0, 0].values  # noqa: B018
    copy = pickle.loads(pickle.dumps(ds))
    ds.close()
    np.testing.assert_array_equal(copy["data"][..., 2].values, DATA[..., 2])
    ds2 = pickle.loads(pickle.dumps(copy))
    copy.close()
    np.testing.assert_array_equal(ds2["data"].values, DATA)
    ds2.close()


def test_dask_graph_pickles(files: dict[str, Path]) -> None:
    with _open(files, "nii.gz", chunks={}) as ds:
        ds["data"].isel(time=0).compute()
        mean = ds["data"].mean("time")
        restored = cloudpickle.loads(cloudpickle.dumps(mean))
        np.testing.assert_allclose(restored.compute().values, DATA.mean(axis=-1))


def test_reading_after_close_reopens(files: dict[str, Path]) -> None:
    ds = _open(files, "nii", cache=False)
    np.testing.assert_array_equal(ds["data"][..., 0].values, DATA[..., 0])
    ds.close()
    np.testing.assert_array_equal(ds["data"][..., 1].values, DATA[..., 1])
    ds.close()


# -- laziness ------------------------------------------------------------------------------------


class _NoReads(Exception):
    pass


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every voxel read raise; record reader opens."""
    opened: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise _NoReads("voxel data was read")

    for cls in (
        readers_module._MappedReader,
        readers_module._FileReader,
        readers_module._GzipReader,
    ):
        original_init = cls.__init__

        def recording_init(
            self: Any, location: Any, *args: Any, _init: Any = original_init
        ) -> None:
            opened.append(location.name)
            _init(self, location, *args)

        monkeypatch.setattr(cls, "__init__", recording_init)
    monkeypatch.setattr(readers_module, "read_region", refuse)
    for cls in (readers_module._Reader, readers_module._MappedReader):
        monkeypatch.setattr(cls, "read_region", refuse)
    for cls in (
        readers_module._MappedReader,
        readers_module._FileReader,
        readers_module._GzipReader,
    ):
        monkeypatch.setattr(cls, "read_into", refuse)
    return opened


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("chunks", [None, {}])
def test_open_and_repr_read_no_data(
    files: dict[str, Path], kind: str, chunks: Any, no_reads: list[str]
) -> None:
    with _open(files, kind, chunks=chunks) as ds:
        text = repr(ds) + repr(ds["data"]) + ds._repr_html_()
        assert "data" in text
        sub = ds.isel(i=slice(1, 4), time=-1).chunk({"k": 1})
        repr(sub)
        assert "x" in sub.xindexes
        ds.nifti.affine  # noqa: B018
        ds["data"].attrs  # noqa: B018
        pickle.dumps(ds)
        with pytest.raises(_NoReads):
            ds["data"][0, 0, 0, 0].values  # noqa: B018  (the patch is live)
    assert len(no_reads) <= 1


def test_a_counting_reader_reads_only_the_requested_volume(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    requested: list[int] = []
    original = readers_module._MappedReader.read_region

    def counting(self: Any, selection: Any) -> np.ndarray:
        requested.append(int(np.prod([count for _, count, _ in selection])))
        return original(self, selection)

    monkeypatch.setattr(readers_module._MappedReader, "read_region", counting)
    with _open(files, "nii", cache=False) as ds:
        assert requested == []
        ds["data"].isel(time=2).values  # noqa: B018
        assert requested == [np.prod(SHAPE[:3])]
        ds["data"].isel(time=slice(0, 2), k=1).values  # noqa: B018
        assert requested[-1] == SHAPE[0] * SHAPE[1] * 2


# -- shared readers and changing files ---------------------------------------------------------


def test_file_shrunk_after_open(tmp_path: Path) -> None:
    path = tmp_path / "shrinks.nii"
    nib.save(nib.Nifti1Image(DATA, np.eye(4)), path)
    ds = xr.open_dataset(path, engine="nifti", cache=False)
    ds["data"][0, 0, 0, 0].values  # noqa: B018  (maps the file)
    with open(path, "r+b") as f:
        f.truncate(400)
    with pytest.raises(NiftiFileChangedError, match=r"shrinks\.nii.*shrank"):
        ds["data"].values  # noqa: B018
    ds.close()


def test_file_rewritten_after_open_is_read_fresh_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "rewritten.nii.gz"
    nib.save(nib.Nifti1Image(DATA, np.eye(4)), path)
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, DATA)
    nib.save(nib.Nifti1Image(DATA[::-1].copy(), np.eye(4)), path)
    with xr.open_dataset(path, engine="nifti") as ds:
        np.testing.assert_array_equal(ds["data"].values, DATA[::-1])


def test_many_files_with_a_tiny_file_cache(tmp_path: Path) -> None:
    """LRU eviction of a reader must never break a read that is using it."""
    paths = []
    for n in range(6):
        path = tmp_path / f"f{n}.nii{'.gz' if n % 2 else ''}"
        nib.save(nib.Nifti1Image(DATA + n, np.eye(4)), path)
        paths.append(path)
    with xr.set_options(file_cache_maxsize=2):
        opened = [xr.open_dataset(p, engine="nifti", cache=False) for p in paths]

        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(40):
                n = int(rng.integers(0, len(paths)))
                t = int(rng.integers(0, SHAPE[3]))
                got = opened[n]["data"].isel(time=t).values
                np.testing.assert_array_equal(got, DATA[..., t] + n)

        try:
            run_in_threads(worker)
        finally:
            for ds in opened:
                ds.close()


def test_same_file_opened_twice_shares_one_lock(files: dict[str, Path]) -> None:
    first = NiftiBackendArray(open_source(files["nii.gz"]).data)
    second = NiftiBackendArray(open_source(files["nii.gz"]).data)
    assert first._lock.lock is second._lock.lock
    restored = pickle.loads(pickle.dumps(first))
    assert restored._lock.lock is first._lock.lock


# -- regions read in place ------------------------------------------------------------------------


def test_contiguous_region_is_read_into_the_output() -> None:
    shape = (4, 3, 5, 6)
    data = np.arange(np.prod(shape), dtype="<i2").reshape(shape, order="F")
    raw = data.tobytes(order="F")
    location = open_source(_nifti_bytes(data)).data
    offset = location.offset
    calls: list[memoryview] = []

    def read_into(start: int, out: memoryview) -> None:
        calls.append(out)
        out[:] = (b"\0" * offset + raw)[start : start + len(out)]

    for selection, expected in [
        ([(0, 4, 1), (0, 3, 1), (0, 5, 1), (2, 1, 1)], data[..., 2:3]),  # one volume
        ([(0, 4, 1), (0, 3, 1), (1, 3, 1), (4, 1, 1)], data[:, :, 1:4, 4:5]),  # a k-slab
        ([(0, 4, 1), (0, 3, 1), (0, 5, 1), (1, 3, 1)], data[..., 1:4]),  # volumes 1..3
        ([(1, 2, 1), (2, 1, 1), (3, 1, 1), (5, 1, 1)], data[1:3, 2:3, 3:4, 5:6]),  # a row
    ]:
        calls.clear()
        got = read_region(read_into, location, selection)
        np.testing.assert_array_equal(got, expected)
        assert len(calls) == 1
        assert np.shares_memory(got, np.frombuffer(calls[0], np.uint8))


def test_strided_region_still_uses_a_buffer() -> None:
    shape = (4, 3, 5, 2)
    data = np.arange(np.prod(shape), dtype="<i2").reshape(shape, order="F")
    location = open_source(_nifti_bytes(data)).data
    raw = b"\0" * location.offset + data.tobytes(order="F")
    calls: list[memoryview] = []

    def read_into(start: int, out: memoryview) -> None:
        calls.append(out)
        out[:] = raw[start : start + len(out)]

    got = read_region(read_into, location, [(0, 2, 2), (0, 3, 1), (0, 5, 1), (1, 1, 1)])
    np.testing.assert_array_equal(got, data[0:4:2, :, :, 1:2])
    assert not np.shares_memory(got, np.frombuffer(calls[0], np.uint8))


def _nifti_bytes(data: np.ndarray) -> io.BytesIO:
    image = nib.Nifti1Image(np.asarray(data), np.eye(4))
    image.header.set_data_dtype(data.dtype)
    return io.BytesIO(image.to_bytes())


# -- the shared per-process reader -----------------------------------------------------------------


def _backend_array(ds: xr.Dataset) -> NiftiBackendArray:
    data: Any = ds["data"].variable._data
    while not isinstance(data, NiftiBackendArray):
        data = data.array
    return data


@pytest.fixture
def bold_gz(make_image: Any) -> tuple[Path, np.ndarray]:
    data = np.arange(10 * 9 * 8 * 12, dtype=np.int16).reshape(10, 9, 8, 12)
    return make_image(data, name="bold.nii.gz"), data


def test_closing_one_dataset_keeps_the_shared_reader(bold_gz: tuple[Path, np.ndarray]) -> None:
    path, data = bold_gz
    first = xr.open_dataset(path, engine="nifti")
    array = _backend_array(first)
    with array._manager.acquire_context() as reader:
        stream = reader._stream
    stream.spacing = 1  # a checkpoint at every volume (real volumes are ≥ the 1 MiB default)
    np.testing.assert_array_equal(first["data"][..., 11].values, data[..., 11])
    other = xr.open_dataset(path, engine="nifti", chunks={})
    np.testing.assert_array_equal(other["data"][..., 0].values, data[..., 0])
    other.close()
    other.close()  # idempotent: does not count as a second user leaving
    before = stream.inflated
    np.testing.assert_array_equal(first["data"][..., 11].values, data[..., 11])
    with array._manager.acquire_context() as reader:
        assert reader._stream is stream  # same reader, checkpoints kept
    assert stream.inflated - before == 10 * 9 * 8 * 2  # one volume, not a pass from byte 0
    first.close()
    assert array._key not in array_module._USERS
    assert not stream._checkpoints  # the last user closed the reader


def test_unpickled_copy_counts_as_a_user(bold_gz: tuple[Path, np.ndarray]) -> None:
    path, data = bold_gz
    array = NiftiBackendArray(open_source(path).data)
    key = array._key
    assert array_module._USERS[key] == 1
    copy = pickle.loads(pickle.dumps(array))
    assert array_module._USERS[key] == 2
    array.close()
    array.close()
    assert array_module._USERS[key] == 1
    copy.close()
    assert key not in array_module._USERS
    with xr.open_dataset(path, engine="nifti") as ds:  # reading after close reopens
        np.testing.assert_array_equal(ds["data"].values, data)


def test_grouped_chunks_keep_a_checkpoint_per_volume(make_image: Any) -> None:
    """Reading a volume again inside a chunk of several volumes re-inflates about that volume."""
    shape = (64, 64, 128, 12)  # 1 MiB volumes: the checkpoint spacing
    data = np.random.default_rng(2).integers(0, 1000, shape).astype(np.int16)
    path = make_image(data, name="grouped.nii.gz")
    volume = 64 * 64 * 128 * 2
    with (
        dask.config.set({"array.chunk-size": f"{4 * volume}B"}),  # 4 volumes per chunk
        xr.open_dataset(path, engine="nifti") as ds,
    ):
        array = _backend_array(ds)
        assert array._grid == (352, 4 * volume, volume)
        np.testing.assert_array_equal(ds["data"][..., 11].values, data[..., 11])
        with array._manager.acquire_context() as reader:
            stream = reader._stream
        before = stream.inflated
        np.testing.assert_array_equal(ds["data"][..., 10].values, data[..., 10])
        assert stream.inflated - before <= volume + (1 << 16)  # not the chunk from volume 8


def test_dataset_tells_the_gzip_reader_its_volume_grid(make_image: Any) -> None:
    shape = (8, 7, 6, 5)
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = make_image(data, name="bold.nii.gz")
    volume = 8 * 7 * 6 * 2
    with (
        dask.config.set({"array.chunk-size": f"{2 * volume}B"}),  # two volumes per chunk
        xr.open_dataset(path, engine="nifti") as ds,
    ):
        np.testing.assert_array_equal(ds["data"][..., 4].values, data[..., 4])
        array = _backend_array(ds)
        assert array._grid == (352, 2 * volume, volume)
        with array._manager.acquire_context() as reader:
            stream = reader._stream
        assert (stream.first, stream.stride) == (352, 2 * volume)
