"""The package's shape: layers that import downward only, in the order of
the one map (docs/design.md), small modules, no module reaching into
another's private names; Keras's internals in one module. Reads the source
only (no framework needed)."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cl"
DESIGN = ROOT / "docs" / "design.md"


def design_map():
    """The modules of docs/design.md's layer map, top to bottom."""
    block = DESIGN.read_text().split("## Layers", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return [module_name(ROOT / path) for path in re.findall(r"^.*?(cl/\S+\.py)", block, re.M)]


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path):
    """Every cl module `path` imports, at the top or inside a function
    (`import_module("cl.x")` strings too)."""
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"cl(\.\w+)+", node.value) and node.value in known:
            found.add(node.value)
    return {name for name in found if name == "cl" or name.startswith("cl.")}


def floors():
    """Each module's floor, from the map: it may import only lower floors."""
    listed = design_map()
    return {name: len(listed) - index for index, name in enumerate(listed)}


FLOORS = floors()


def test_the_map_lists_every_module_once():
    listed = design_map()
    assert len(listed) == len(set(listed)), [n for n in listed if listed.count(n) > 1]
    assert sorted(listed) == sorted(modules())


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_imports_point_down(name):
    upward = {target: FLOORS[target] for target in imports_of(modules()[name])
              if target != name and FLOORS[target] >= FLOORS[name]}
    assert not upward, f"{name} (floor {FLOORS[name]}) imports from its floor or above: {upward}"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_modules_stay_small_and_private_names_stay_home(name):
    source = modules()[name].read_text()
    assert len(source.splitlines()) <= 300, f"{name} has {len(source.splitlines())} lines"
    aliases = {alias.asname or alias.name.split(".")[-1]
               for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
               and node.module and node.module.startswith("cl") for alias in node.names}
    reached = [f"{alias}.{attribute}" for alias, attribute in
               re.findall(r"\b(\w+)\.(_[a-z]\w*)", source) if alias in aliases]
    assert not reached, f"{name} uses other cl modules' private names: {reached}"


def test_keras_internals_only_in_keras3_step():
    """Issue 22 item 1: one module holds every use of Keras 3's internals
    (`keras.src`); cl.compat holds Keras 2's."""
    users = sorted(name for name, path in modules().items()
                   if re.search(r"^\s*(from|import) keras\.src\b", path.read_text(), re.M))
    assert users == ["cl.compat", "cl.keras3.step"]


def test_keras3_reaches_no_private_attribute():
    """Issue 22 item 1: the Keras 3 front-end uses the public names of its
    layer (CenterLossModel), of Keras and of Python; the private ones Keras
    needs read (a step's frame, a model's nested layers) only in cl.keras3.step."""
    for name, path in modules().items():
        if name.startswith("cl.keras3") and name != "cl.keras3.step":
            reached = [f"{owner}.{attribute}" for owner, attribute in
                       re.findall(r"\b(\w+)\.(_[a-z]\w*)", path.read_text())
                       if owner not in ("self", "cls")]
            assert not reached, f"{name} reaches private names: {reached}"
