"""A BIDS dataset as a DataTree: one lazy image per leaf, dataset metadata at the root.

What ``xr.open_datatree(root, engine="nifti")`` builds (the backend passes
its own ``open_dataset`` in, so every leaf is opened exactly as a single
file is). The tree holds:

- ``/``: the fields of ``dataset_description.json`` as attrs;
- ``/participants``: ``participants.tsv`` as a Dataset indexed by
  ``participant_id`` (column descriptions from ``participants.json`` in each
  variable's attrs), when the dataset has one. It is a child rather than the
  root's own data because a DataTree's children inherit the root's
  coordinates: ``participant_id`` would then show up in every image;
- ``/sub-01/ses-1/func/task-rest_run-1_bold``...: the images, named as
  :mod:`xarray_nifti.bids` explains, with their inherited sidecars' fields
  in the data variable's attrs;
- ``/derivatives/<pipeline>``: a pipeline's ``dataset_description.json`` as
  attrs, its images below it (only with ``derivatives=``).

Opening reads one header per image and each JSON/TSV file once, never voxel
data.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import pandas as pd
import xarray as xr

from ._bids import (
    DESCRIPTION_FILE,
    applicable_sidecars,
    attr_values,
    is_url,
    read_json_object,
    read_text,
    sidecar_attrs,
)
from ._resolve import ListedObject
from .bids import BidsDatasetWarning, BidsFile, BidsListing, list_dataset

__all__ = ["bids_groups", "bids_tree"]

PARTICIPANTS = "participants"
_REMOTE_THREADS = 8  # concurrent header reads over the network (latency bound)

# Opens one image, given its path or the remote object the listing found.
OpenImage = Callable[[str | ListedObject], xr.Dataset]
T = TypeVar("T")
R = TypeVar("R")


def _participants(
    listing: BidsListing, read: Callable[[str], dict[str, Any] | None]
) -> xr.Dataset | None:
    if "participants.tsv" not in listing.other_files:
        return None
    name = f"{listing.root}/participants.tsv"
    text = read_text(name, listing.storage_options)
    if text is None:
        return None
    # BIDS writes missing values as "n/a"; other cells keep their text or number.
    table = pd.read_csv(io.StringIO(text), sep="\t", na_values=["n/a"], keep_default_na=False)
    if "participant_id" not in table.columns:
        raise ValueError(
            f"{name}: no participant_id column (BIDS requires it first), found "
            f"{', '.join(map(str, table.columns))}; rename the column of subject labels"
        )
    dataset: xr.Dataset = table.set_index("participant_id").to_xarray()
    described = read(f"{listing.root}/participants.json") or {}
    for column, description in described.items():
        if column in dataset.variables and isinstance(description, dict):
            dataset[column].attrs.update(attr_values(description))
    return dataset


def _open_leaf(
    image: BidsFile,
    open_image: OpenImage,
    listing: BidsListing,
    sidecars: Sequence[str],
    read: Callable[[str], dict[str, Any] | None],
) -> xr.Dataset:
    try:
        if listing.fs is None:
            dataset = open_image(image.path)
        else:
            info = listing.object_info.get(image.path)
            dataset = open_image(ListedObject(listing.fs, image.path, info))
    except Exception as err:
        if image.path in str(err) or os.path.basename(image.path) in str(err):
            raise
        if _rebuildable(err):
            raise type(err)(f"{image.path}: {err}") from err
        err.add_note(f"while opening {image.path} of the BIDS dataset {listing.root}")
        raise
    if sidecars:
        for variable in dataset.data_vars.values():
            fields = sidecar_attrs(image.path, variable.attrs, sidecars=sidecars, read=read)
            variable.attrs.update(fields)
    return dataset


def _each(
    function: Callable[[T], R],
    items: Sequence[T],
    remote: bool,
    stop: Callable[[R], bool] = lambda result: False,
) -> list[R]:
    """``[function(item) for item in items]``, concurrently over the network.

    Locally, items are done in order and the list ends at the first result
    for which ``stop`` is true; concurrent calls all run.
    """
    if remote and len(items) > 1:
        with ThreadPoolExecutor(_REMOTE_THREADS) as pool:
            return list(pool.map(function, items))
    results = []
    for item in items:
        results.append(function(item))
        if stop(results[-1]):
            break
    return results


def _rebuildable(err: Exception) -> bool:
    """Whether ``type(err)(message)`` gives an error of the same type (plain built-ins do)."""
    return type(err) in (ValueError, TypeError, KeyError, RuntimeError, OSError, EOFError)


def bids_groups(
    root: str | os.PathLike[str],
    open_image: OpenImage,
    *,
    derivatives: bool | str | Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    sidecar: bool = True,
    on_error: str = "raise",
    **filters: Any,
) -> dict[str, xr.Dataset]:
    """The groups of a BIDS dataset's tree, ``{"/": ..., "/sub-01/func/...": ...}``.

    Parameters
    ----------
    root
        The dataset's top folder (local path or fsspec URL).
    open_image
        Opens one image: the backend's ``open_dataset`` with the user's
        options and ``sidecar=False``, called with the image's path, or for
        a remote dataset with the :class:`ListedObject` that the listing
        found (so that the image costs one GET and no HEAD request).
    derivatives, storage_options, **filters
        As for :func:`xarray_nifti.bids_files`.
    sidecar
        Add the fields of the image's inherited JSON sidecars to the data
        variable's attrs (nearest wins).
    on_error
        ``"raise"`` (default): an image that cannot be opened stops with its
        error, which names the file. ``"warn"``: it is left out with a
        :class:`~xarray_nifti.BidsDatasetWarning` naming it and the
        error, and the rest of the tree opens.
    """
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', not {on_error!r}")
    listing = list_dataset(
        root, derivatives=derivatives, storage_options=storage_options, **filters
    )

    remote = is_url(listing.root)
    images = sorted(listing.images, key=lambda i: i.tree_path)
    # Only JSON files in the folders from an image's dataset root down to it can apply.
    json_by_folder: dict[str, list[str]] = {}
    for names in listing.json_files.values():
        for name in names:
            json_by_folder.setdefault(name.rpartition("/")[0], []).append(name)

    def candidates(image: BidsFile) -> list[str]:
        folders = [image.dataset_root]
        for part in image.path[len(image.dataset_root) + 1 :].split("/")[:-1]:
            folders.append(f"{folders[-1]}/{part}")
        return [name for folder in folders for name in json_by_folder.get(folder, [])]

    sidecars = {
        image.path: applicable_sidecars(image.path, candidates(image), image.dataset_root)
        if sidecar
        else []
        for image in images
    }
    # Each JSON file is read once, however many images inherit it.
    descriptions = [listing.root, *listing.pipelines.values()]
    json_names = [f"{folder}/{DESCRIPTION_FILE}" for folder in descriptions]
    if "participants.json" in listing.other_files:
        json_names.append(f"{listing.root}/participants.json")
    json_names += sorted({name for names in sidecars.values() for name in names})
    contents = _each(
        partial(read_json_object, storage_options=listing.storage_options), json_names, remote
    )
    read = dict(zip(json_names, contents, strict=True)).get

    groups: dict[str, xr.Dataset] = {
        "/": xr.Dataset(attrs=attr_values(read(f"{listing.root}/{DESCRIPTION_FILE}") or {}))
    }
    participants = _participants(listing, read)
    if participants is not None:
        groups[f"/{PARTICIPANTS}"] = participants
    for pipeline, pipeline_root in listing.pipelines.items():
        description = read(f"{pipeline_root}/{DESCRIPTION_FILE}") or {}
        groups[f"/derivatives/{pipeline}"] = xr.Dataset(attrs=attr_values(description))

    def attempt(image: BidsFile) -> xr.Dataset | Exception:
        try:
            return _open_leaf(image, open_image, listing, sidecars[image.path], read)
        except Exception as err:
            return err

    def fatal(result: xr.Dataset | Exception) -> bool:
        return on_error == "raise" and isinstance(result, Exception)

    results = _each(attempt, images, remote, stop=fatal)
    errors = [result for result in results if isinstance(result, Exception)]
    if errors and on_error == "raise":
        for result in results:
            if isinstance(result, xr.Dataset):
                result.close()  # no file stays open behind the error
        raise errors[0]
    for image, result in zip(images, results, strict=True):
        if isinstance(result, Exception):
            warnings.warn(
                f"{image.path}: left out of the tree, cannot be opened "
                f"({type(result).__name__}: {result})",
                BidsDatasetWarning,
                stacklevel=3,
            )
        else:
            groups["/" + image.tree_path] = result
    return groups


def bids_tree(groups: Mapping[str, xr.Dataset]) -> xr.DataTree:
    """The DataTree of :func:`bids_groups`; closing the tree closes every image.

    It equals ``xr.DataTree.from_dict(groups)``. That call checks each node
    against its parents (alignment, inherited coordinates, names) as it
    inserts it, which costs more than opening the image: here no group with
    children has variables (the root and pipeline groups hold attrs only), so
    there is nothing to check, and the nodes are linked directly. Should
    xarray's node internals ever differ from what this expects, the tree is
    built by ``from_dict`` instead.
    """
    tree = _linked(groups) if _nothing_to_inherit(groups) else None
    if tree is None:
        tree = xr.DataTree.from_dict(dict(groups))
        for path, dataset in groups.items():
            if dataset._close is not None:
                tree[path].set_close(dataset._close)
    return tree


def _parent_path(path: str) -> str:
    return path.rpartition("/")[0] or "/"


def _nothing_to_inherit(groups: Mapping[str, xr.Dataset]) -> bool:
    """Whether no group that has others below it holds variables (or dims)."""
    parents = {_parent_path(path) for path in groups if path != "/"}
    return all(not groups[path].variables for path in parents if path in groups)


def _linked(groups: Mapping[str, xr.Dataset]) -> xr.DataTree | None:
    """The tree of ``groups`` (absolute paths), nodes linked without checks; ``None`` if
    xarray's internals are not the expected ones.

    Groups are inserted by depth, as ``from_dict`` does, so that every node lists its
    children in the same order.
    """
    nodes: dict[str, xr.DataTree] = {}
    empty = xr.Dataset()  # copied into each folder's node: cheaper than making one each time

    def node_at(path: str) -> xr.DataTree:
        node = nodes.get(path)
        if node is None:
            dataset = groups.get(path, empty)
            node = nodes[path] = xr.DataTree(dataset)
            if dataset._close is not None:
                node.set_close(dataset._close)
            if path != "/":
                parent = node_at(_parent_path(path))
                name = path.rpartition("/")[2]
                parent._children[name] = node
                node._parent = parent
                node._name = name
        return node

    try:
        root = node_at("/")
        for path in sorted(groups, key=lambda p: p.count("/")):
            node_at(path)
    except AttributeError:
        return None
    for path, node in nodes.items():  # read back through the public accessors
        if path != "/" and (
            node.name != path.rpartition("/")[2]
            or node.parent is not nodes[_parent_path(path)]
            or node.parent.children.get(node.name) is not node
        ):
            return None
    return root
