"""Operations timed against several peer libraries (nibabel, SimpleITK): rows and checks.

:func:`compare_saves` times an operation that writes an image -- ours and each
peer's, interleaved, into fresh paths -- then reads every output back with
nibabel and compares it with the expected image (:func:`saved_problem`). A wrong
output of ours raises :class:`~cases._harness.CorrectnessError`; a peer whose
output is wrong is shown as such and never counted as the fastest
(:func:`peer_rows`). SimpleITK is part of the ``bench`` extra; where it is not
installed its rows say ``n/a``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from cases._harness import CorrectnessError, Row, Sample, best_of, load, optional_module
from cases._inputs import scratch

__all__ = ["Peer", "Stored", "compare_saves", "peer_rows", "saved_problem", "simpleitk"]


def simpleitk() -> ModuleType | None:
    """The ``SimpleITK`` module, or None if it is not installed."""
    return optional_module("SimpleITK")


@dataclass(frozen=True)
class Stored:
    """What an image stores: values (a memmap for ``.nii``), scaling, dtype and geometry."""

    raw: np.ndarray
    slope: float
    inter: float
    affine: np.ndarray
    codes: tuple[int, int]

    @classmethod
    def of(cls, img: Any) -> Stored:
        """Read ``img``'s stored values once (an in-memory image is stored unscaled)."""
        proxy = img.dataobj
        header = img.header
        codes = (int(header["qform_code"]), int(header["sform_code"]))
        if hasattr(proxy, "get_unscaled"):
            raw = np.asanyarray(proxy.get_unscaled())
            return cls(raw, float(proxy.slope), float(proxy.inter), img.affine, codes)
        return cls(np.asanyarray(proxy), 1.0, 0.0, img.affine, codes)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored dtype."""
        return self.raw.dtype

    def slabs(self) -> list[tuple[Any, ...]]:
        """Index tuples of at most 16 volumes (one for a 3-D image)."""
        if self.raw.ndim <= 3:
            return [(...,)]
        return [(..., slice(t, t + 16)) for t in range(0, self.raw.shape[-1], 16)]


def saved_problem(path: str, expected: Stored) -> str | None:
    """What is wrong with the image saved at ``path`` against ``expected``; None if nothing.

    Compares shape, affine (to 1e-4 mm: single-precision headers) and the scaled
    voxel values to single precision (``|got - expected| ≤ 1e-6 · max |expected|``),
    slab by slab of volumes, whatever dtype and scaling each side stores.
    """
    got = Stored.of(load(path))
    if got.raw.shape != expected.raw.shape:
        return f"shape {got.raw.shape}, expected {expected.raw.shape}"
    error = float(np.abs(got.affine - expected.affine).max())
    if error > 1e-4:
        return f"affine differs by up to {error:.3g} mm"
    largest = float(np.abs(expected.raw).max(initial=0))
    tolerance = 1e-6 * max(1.0, abs(expected.slope) * largest + abs(expected.inter))
    wrong, worst = 0, 0.0
    for index in expected.slabs():
        values = got.raw[index] * got.slope + got.inter
        difference = np.abs(values - (expected.raw[index] * expected.slope + expected.inter))
        wrong += int(np.count_nonzero(difference > tolerance))
        worst = max(worst, float(difference.max(initial=0.0)))
    if not wrong:
        return None
    problem = (
        f"{wrong} of {expected.raw.size} voxel values ({100 * wrong / expected.raw.size:.0f} %) "
        f"differ from the expected ones, by up to {worst:.3g}"
    )
    if (got.slope, got.inter) != (expected.slope, expected.inter) and got.dtype == expected.dtype:
        problem += (
            f" (stored {got.dtype} with scl_slope {got.slope:.4g}, scl_inter {got.inter:.4g}"
            f" instead of {expected.slope:.4g}, {expected.inter:.4g}: the scaling was recomputed)"
        )
    return problem


def describe_output(name: str, path: str) -> str:
    """``SimpleITK float32 12.3 MB``: what an output stores and its size on disk."""
    img = load(path)
    return f"{name} {img.get_data_dtype()} {os.path.getsize(path) / 1e6:.1f} MB"


@dataclass
class Peer:
    """A peer library's run of an operation: its name, what it calls, its best sample.

    ``wrong`` says what is wrong with its output (``None`` if it is right).
    """

    name: str
    call: str
    sample: Sample
    wrong: str | None = None


def peer_rows(case: str, ours: Sample, peers: list[Peer], note: str = "") -> list[Row]:
    """The rows of one operation timed against peers (the first peer is nibabel).

    A row ``ours/nib``, then ``ours/fastest`` against the fastest peer whose
    output is right, then one ``peer wrong`` row per peer whose output is not
    (it is never counted as fastest).
    """
    first = peers[0]
    rows = [
        Row(
            case,
            ours.seconds,
            first.call,
            first.sample.seconds,
            ours.seconds / first.sample.seconds,
            f"ours/{first.name}",
            ours.peak_mib,
            note=note,
        )
    ]
    right = [peer for peer in peers if peer.wrong is None]
    if right:
        fastest = min(right, key=lambda peer: peer.sample.seconds)
        rows.append(
            Row(
                "  same vs the fastest correct peer",
                ours.seconds,
                f"{fastest.name}: {fastest.call}",
                fastest.sample.seconds,
                ours.seconds / fastest.sample.seconds,
                "ours/fastest",
            )
        )
    else:
        rows.append(Row("  same vs the fastest correct peer", status="n/a", note="no peer right"))
    rows.extend(
        Row(
            f"  {peer.name} output",
            None,
            peer.call,
            peer.sample.seconds,
            status="peer wrong",
            note=f"{peer.name}: {peer.wrong}",
        )
        for peer in peers
        if peer.wrong is not None
    )
    return rows


def compare_saves(
    case: str,
    *,
    workdir: Path,
    suffix: str,
    ours: Callable[[str], object],
    peers: dict[str, tuple[str, Callable[[str], object] | None]],
    expected: Any,
    repeat: int,
    strict: Callable[[str], None] | None = None,
    note: str = "",
) -> list[Row]:
    """Time ``ours`` and each peer writing into a fresh ``*suffix`` path; check; the rows.

    ``peers`` maps a peer's name to what it calls (as text) and the function
    that writes its output to the path it gets; a function of ``None`` means
    the peer is not installed (an ``n/a`` row). The first peer is the one of
    the ``ours/<name>`` row. Every output of the first round is compared with
    ``expected``; ``strict`` may check ours further (stored dtype, scaling).
    """
    writers: dict[str, Callable[[str], object]] = {"ours": ours}
    calls: dict[str, str] = {}
    missing: list[str] = []
    for name, (call, write) in peers.items():
        calls[name] = call
        if write is None:
            missing.append(name)
        else:
            writers[name] = write
    wrong: dict[str, str | None] = {}
    outputs: list[str] = []
    truth = Stored.of(expected)
    with scratch(workdir) as out:
        targets = {name: os.fspath(out / f"{name}{suffix}") for name in writers}

        def clean(name: str) -> None:
            Path(targets[name]).unlink(missing_ok=True)
            os.sync()  # no write-back of the previous output during the next timing

        def check(_: dict[str, Any]) -> None:
            problem = saved_problem(targets["ours"], truth)
            if problem is not None:
                raise CorrectnessError(f"{case} (ours): {problem}")
            if strict is not None:
                strict(targets["ours"])
            for name in writers:
                if name != "ours":
                    wrong[name] = saved_problem(targets[name], truth)
            outputs.extend(describe_output(name, target) for name, target in targets.items())

        candidates: dict[str, Callable[[], object]] = {
            name: partial(write, targets[name]) for name, write in writers.items()
        }
        best = best_of(candidates, repeat, check, before_each=clean)
    present = [Peer(name, calls[name], best[name], wrong[name]) for name in peers if name in best]
    outputs_note = "outputs: " + ", ".join(outputs)
    note = f"{note}; {outputs_note}" if note else outputs_note
    rows = peer_rows(case, best["ours"], present, note)
    rows.extend(
        Row(f"  {name}: {calls[name]}", status="n/a", note=f"{name} is not installed")
        for name in missing
    )
    return rows
