"""Print the corpus as the markdown table "case | what is wrong | outcome".

Run from the repository root::

    python -m tests.corpus.table            # the table for the docs and README
    python -m tests.corpus.table --nibabel  # with a column on what nibabel does

The table is generated from :data:`cases.CASES`, so it cannot drift from the
outcomes that ``tests/test_corpus.py`` checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python tests/corpus/table.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from corpus.cases import CASES, Case
else:
    from .cases import CASES, Case

__all__ = ["markdown_table"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(cases: list[Case] | None = None, *, nibabel: bool = False) -> str:
    """The markdown table of ``cases`` (default: the whole corpus).

    Examples
    --------
    >>> print(markdown_table(CASES[:1]))  # doctest: +ELLIPSIS
    | case | what is wrong | outcome |
    |---|---|---|
    | `empty-file` | zero-length `.nii` | `NiftiFormatError` on opening, naming the file and ... |
    """
    cases = CASES if cases is None else cases
    head = ["case", "what is wrong", "outcome"] + (["nibabel 5.4"] if nibabel else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        row = [f"`{case.name}`", case.description, case.outcome.describe()]
        if nibabel:
            row.append(case.nibabel or "same")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(markdown_table(nibabel="--nibabel" in args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
