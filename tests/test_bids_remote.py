"""A BIDS dataset as a DataTree on S3 and on a dask.distributed cluster.

The S3 tests serve the generated dataset of ``test_bids_tree`` from moto's
server on 127.0.0.1, behind the request-counting middleware of
``test_remote``, and count what opening the tree costs at the server. The
cluster test reuses the ``LocalCluster`` fixture of ``test_distributed``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import xarray_nifti
from s3_server import RequestLog, s3_endpoint
from test_bids_tree import Dataset, leaves, make_dataset, open_tree, time_mean
from xarray_nifti import NiftiFileChangedError
from xarray_nifti.bids import BidsDatasetWarning


@pytest.fixture(scope="module")
def bids(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("bids") / "ds")


# -- on S3 (moto's server on 127.0.0.1, requests counted at the server) ----------------------

BUCKET = "bids-tree"
HEADER_RANGE = 2048  # bytes: a NIfTI-1 header with room for gzip framing


@dataclass
class Bucket:
    url: str
    options: dict[str, Any]
    log: RequestLog
    keys: dict[Path, str]  # local file → its key
    client: Any  # boto3's, to change objects behind the package's back


@pytest.fixture(scope="module")
def bucket(bids: Dataset) -> Any:
    with s3_endpoint(BUCKET) as endpoint:
        keys = {}
        for path in sorted(bids.root.rglob("*")):
            if path.is_file():
                keys[path] = "ds/" + path.relative_to(bids.root).as_posix()
                endpoint.client.upload_file(str(path), BUCKET, keys[path])
        yield Bucket(f"s3://{BUCKET}/ds", endpoint.options, endpoint.log, keys, endpoint.client)


def test_s3_tree_equals_the_local_tree(bids: Dataset, bucket: Bucket) -> None:
    remote = open_tree(bucket.url, storage_options=bucket.options, derivatives=True)
    local = open_tree(bids.root, derivatives=True)
    assert set(leaves(remote)) == set(leaves(local))
    for path in leaves(local):
        xr.testing.assert_identical(remote[path].to_dataset(), local[path].to_dataset())
        local_source = local[path].data.encoding["source"]
        relative = os.path.relpath(local_source, bids.root)
        assert remote[path].data.encoding["source"] == f"{bucket.url}/{relative}"
    for group in ("/", "/participants", "/derivatives/prep"):
        xr.testing.assert_identical(remote[group].to_dataset(), local[group].to_dataset())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BidsDatasetWarning)
        table = xarray_nifti.bids_files(bucket.url, storage_options=bucket.options, run=1)
        local_table = xarray_nifti.bids_files(bids.root, run=1)
    assert list(table.tree_path) == list(local_table.tree_path)
    assert [p.removeprefix(bucket.url) for p in table.path] == [
        p.removeprefix(str(bids.root)) for p in local_table.path
    ]


def test_s3_open_reads_one_header_per_image_and_each_json_once(
    bids: Dataset, bucket: Bucket
) -> None:
    image_keys = {bucket.keys[w.path] for w in bids.images}
    bucket.log.clear()
    tree = open_tree(bucket.url, storage_options=bucket.options, chunks={})
    entries = list(bucket.log.entries)
    gets = [e for e in entries if e["method"] == "GET"]
    for key in image_keys:
        (get,) = bucket.log.gets(key)
        assert get["range"] is not None
        assert get["bytes"] <= HEADER_RANGE
    metadata = [e["key"] for e in gets if e["key"].endswith((".json", ".tsv"))]
    assert len(metadata) == len(set(metadata))  # each JSON/TSV file read once
    expected_metadata = {
        "ds/dataset_description.json",
        "ds/participants.tsv",
        "ds/participants.json",
        "ds/task-rest_bold.json",
        "ds/T1w.json",
        "ds/sub-01/sub-01_task-rest_bold.json",
        "ds/sub-01/ses-1/sub-01_ses-1_task-rest_bold.json",
        "ds/sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.json",
    }
    assert set(metadata) == expected_metadata
    listings = [e for e in gets if e["key"] == ""]
    assert len(listings) == 1
    assert {e["key"] for e in gets} == image_keys | expected_metadata | {""}
    # Each object's size and ETag come from the listing: no HEAD request to stamp or size it.
    assert [e for e in entries if e["method"] == "HEAD"] == []
    image_bytes = sum(e["bytes"] for e in gets if e["key"] in image_keys)
    metadata_bytes = sum(e["bytes"] for e in gets if e["key"] in expected_metadata)
    print(
        f"\nopen_datatree over S3, {len(image_keys)} images: {len(gets)} GETs "
        f"({len(image_keys)} header ranges, {image_bytes} B; {len(metadata)} JSON/TSV files, "
        f"{metadata_bytes} B; 1 listing, {listings[0]['bytes']} B), "
        f"{sum(e['method'] == 'HEAD' for e in entries)} HEADs"
    )
    assert len(leaves(tree)) == len(image_keys)


def test_s3_image_replaced_after_the_listing_is_noticed(bids: Dataset, bucket: Bucket) -> None:
    # Stamped from the listing's size and ETag, checked against a HEAD at read time.
    prefix = "changed/"  # a copy of the dataset, so that the other tests see the original
    for path, key in bucket.keys.items():
        bucket.client.upload_file(str(path), BUCKET, prefix + key)
    tree = open_tree(f"s3://{BUCKET}/{prefix}ds", storage_options=bucket.options, suffix="T1w")
    changed, unchanged = [w for w in bids.images if w.entities["suffix"] == "T1w"][:2]
    other = bids.images[0].path.read_bytes()  # another image: another size and ETag
    bucket.client.put_object(Bucket=BUCKET, Key=prefix + bucket.keys[changed.path], Body=other)
    np.testing.assert_allclose(tree[unchanged.tree_path].data.values, unchanged.data, rtol=1e-6)
    with pytest.raises(NiftiFileChangedError, match=r"changed since it was opened"):
        tree[changed.tree_path].data.values  # noqa: B018


def test_s3_image_opened_alone_costs_one_head(bids: Dataset, bucket: Bucket) -> None:
    image = bids.images[0]
    bucket.log.clear()
    with xr.open_dataset(
        f"{bucket.url}/{bucket.keys[image.path][len('ds/') :]}",
        engine="nifti",
        storage_options=bucket.options,
        sidecar=False,
    ) as ds:
        assert ds.data.shape == image.data.shape
        entries = [e for e in bucket.log.entries if e["key"] == bucket.keys[image.path]]
    assert [e["method"] for e in entries] == ["HEAD", "GET"]  # stamp, then the header's range


# -- on a dask.distributed cluster of worker processes -----------------------------------------


def test_tree_computes_on_a_local_cluster(bids: Dataset, client: Any) -> None:
    tree = open_tree(bids.root, chunks={}, suffix="bold")
    means = tree.map_over_datasets(time_mean)
    futures = client.compute([node.data.data for node in leaves(means).values()])
    for path, values in zip(leaves(means), client.gather(futures), strict=True):
        np.testing.assert_allclose(values, bids.image(path).data.mean(-1), rtol=1e-5)
