"""Sphinx configuration of the xarray-nifti documentation.

Build (both must pass with zero warnings)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

Figures and command-line transcripts are produced at build time by our own
code (``docs/figures/*.py`` and the ``xarray-nifti`` CLI), see
``docs/_ext/xarray_nifti_docs.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import xarray_nifti

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# -- project -------------------------------------------------------------------------------
project = "xarray-nifti"
author = "xarray-nifti developers"
copyright = "xarray-nifti developers"
release = xarray_nifti.__version__
version = ".".join(release.split(".")[:2])

# -- general -------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "xarray_nifti_docs",  # docs/_ext: build-time figures, CLI transcripts, API coverage check
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_generated",
    "figures",
    "benchmarks_table.md",  # included by benchmarks.md
    "README.md",
]
templates_path: list[str] = []
toc_object_entries_show_parents = "hide"  # "affine", not "NiftiDataArrayAccessor.affine"
nitpicky = False  # no intersphinx (builds run offline), so external types cannot resolve

# -- MyST ----------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# -- autodoc / autosummary / numpydoc ------------------------------------------------------
autosummary_generate = False  # the API pages list every object explicitly
# Types are shown in the signatures, not in the numpydoc Parameters sections (which name
# and describe each parameter). numpy's typing aliases would print as the long unions
# they stand for: they keep their names instead (see _alias_names below).
autodoc_typehints = "signature"
autodoc_type_aliases = {
    "ArrayLike": "ArrayLike",
    "DTypeLike": "DTypeLike",
    "FloatArray": "NDArray[float64]",
    "Figure": "Figure",  # imported for type checking only (matplotlib is optional)
}
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")


def _alias_names(
    app: object,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Print an alias of ``autodoc_type_aliases`` by its name inside unions too.

    Sphinx prints such an alias as ``TypeAliasForwardRef('name')`` when it is
    one member of a union (``DTypeLike | None``).
    """
    if signature is not None:
        signature = _ALIAS_REPR.sub(r"\1", signature)
    if return_annotation is not None:
        return_annotation = _ALIAS_REPR.sub(r"\1", return_annotation)
    return signature, return_annotation


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _alias_names)


# -- doctest -------------------------------------------------------------------------------
# Only explicit ``doctest`` directives in the pages are run here. Docstring
# examples (``>>>`` in src/) are run by ``pytest --doctest-modules src``, which
# gives them their module's globals as they are written for.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import os as _os, tempfile as _tempfile
_docs_cwd = _os.getcwd()
_docs_tmp = _tempfile.mkdtemp(prefix="xarray-nifti-docs-")
_os.chdir(_docs_tmp)  # examples write their files into a fresh folder
import matplotlib as _mpl
_mpl.use("Agg")
"""
doctest_global_cleanup = """
import shutil as _shutil
_os.chdir(_docs_cwd)
_shutil.rmtree(_docs_tmp, ignore_errors=True)
"""

# -- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"xarray-nifti {release}"
html_theme_options = {
    "github_url": "https://github.com/xarray-nifti/xarray-nifti",
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": [], "getting-started": [], "cli": [], "benchmarks": []}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
