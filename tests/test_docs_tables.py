"""Tables copied into the README stay equal to what generates them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.corpus.table import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_broken_files_table_matches_the_corpus() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- corpus-table:start -->\n(.*?)\n<!-- corpus-table:end -->", text, re.DOTALL
    )
    assert match is not None, "README lost its corpus-table markers"
    assert match.group(1).strip() == markdown_table().strip(), (
        "README's broken-files table is stale: paste `python -m tests.corpus.table` between "
        "the corpus-table markers"
    )
