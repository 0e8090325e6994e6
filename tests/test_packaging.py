"""The installed distribution registers its entry points and declares what the tests import."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import distribution, entry_points, packages_distributions
from pathlib import Path

import xarray as xr

from xarray_nifti.backend import NiftiBackendEntrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_xarray_backend_entry_point_is_registered() -> None:
    found = {ep.name: ep for ep in entry_points(group="xarray.backends")}
    assert found["nifti"].value == "xarray_nifti.backend:NiftiBackendEntrypoint"
    assert found["nifti"].load() is NiftiBackendEntrypoint
    assert "nifti" in xr.backends.list_engines()


def test_console_script_is_registered() -> None:
    found = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert found["xarray-nifti"].value == "xarray_nifti.cli:main"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared(extra: str) -> set[str]:
    """Distributions the core install plus ``extra`` ask for, following self-references."""
    requires = distribution("xarray-nifti").requires or []
    wanted, names, seen = [extra], set(), set()
    while wanted:
        current = wanted.pop()
        seen.add(current)
        for requirement in requires:
            name, _, marker = requirement.partition(";")
            in_extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if in_extra and in_extra.group(1) != current:
                continue
            names.add(_requirement_name(name))
            own = re.match(r"xarray-nifti\[([^\]]+)\]", name.strip())
            if own:
                wanted += [e for e in own.group(1).split(",") if e not in seen]
    return names


def _imported_top_level_modules(folder: Path) -> set[str]:
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_package_the_tests_import_is_declared_in_the_test_extra() -> None:
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"conftest", "corpus", "tests"}
    providers = packages_distributions()
    declared = _declared("test")
    missing = {}
    for module in sorted(_imported_top_level_modules(ROOT / "tests")):
        if module in sys.stdlib_module_names or module in local or module == "xarray_nifti":
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"tests import {module!r}, which no installed distribution provides"
        if not dists & declared:
            missing[module] = sorted(dists)
    assert missing == {}, f"imported by the tests but not declared in the test extra: {missing}"
