"""README.md and docs/: every code block names its language and every
Python block a tag saying where it runs (tests/support/docs_fences.py); the eager
blocks (```python tf2, ```python keras3) run as written, one program per
page, Keras 3 on this environment's backend; a multi-device block names an
existing test; relative links and anchors resolve; the README has none
that a package index page could not follow, and neither has the long
description setup.py makes from it."""

import importlib.util
import os
import pathlib
import re

import docs_fences
import pytest

ROOT = docs_fences.ROOT
HAS_TF = importlib.util.find_spec("tensorflow") is not None


def test_every_page_is_listed_in_the_index_and_opens_with_who_it_is_for():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in docs_fences.PAGES[1:]:
        if page.name != "index.md":
            assert f"]({page.name})" in index, page.name
            assert "**Who this is for:**" in page.read_text().split("\n\n", 3)[1], page.name


@pytest.mark.parametrize("page", docs_fences.PAGES, ids=lambda page: page.name)
def test_every_block_names_where_it_runs(page):
    assert docs_fences.problems(page) == []


def test_the_checks_refuse_untagged_blocks_and_missing_tests(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```\nx = 1\n```\n\n```python\nx = 1\n```\n\n```py graph\nx = 1\n```\n\n"
                    "```python multi-device test=tests/eager/test_docs.py::test_nope\nx = 1\n```\n\n"
                    "```python multi-device\nx = 1\n```\n\n```python graph\nx = 1\n```\n\n"
                    "```sh\nmake test\n```\n")
    docs_fences.ROOT, saved = tmp_path.parent, docs_fences.ROOT
    try:
        found = docs_fences.problems(page)
    finally:
        docs_fences.ROOT = saved
    assert len(found) == 5, found
    assert "a block without a language" in found[0]
    assert all("must be ```python <tag>" in problem for problem in found[1:3])
    assert "no file tests/eager/test_docs.py" in found[3] and "names the test" in found[4]
    assert docs_fences.missing_test("tests/eager/test_docs.py::test_nope") == [
        "tests/eager/test_docs.py::test_nope: no test_nope in tests/eager/test_docs.py"]
    assert docs_fences.missing_test(
        "tests/eager/test_docs.py::test_every_block_names_where_it_runs") == []


def backend():
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@pytest.mark.parametrize("group", docs_fences.groups(("tf2", "keras3")), ids=docs_fences.group_id)
def test_blocks_run(group, tmp_path):
    page, tag, chosen = group
    if tag == "tf2" and not HAS_TF:
        pytest.skip("TensorFlow not installed")
    if tag == "keras3":
        from conftest import keras3_or_skip
        keras3_or_skip()
    ok, output = docs_fences.run(chosen, tmp_path, backend=backend() if tag == "keras3" else None)
    assert ok, output


def test_keras3_blocks_run_on_this_backend():
    """The README's Keras 3 quickstart sets "jax" for the reader; the test
    runs it on the environment's backend instead."""
    (page, _, chosen), = [group for group in docs_fences.groups(("keras3",))
                          if group[0].name == "README.md"]
    code = docs_fences.program(chosen, backend="torch")
    assert 'os.environ["KERAS_BACKEND"] = "torch"' in code and '"jax"' not in code
    assert "epochs=5" in chosen[0].code and "epochs=1" in code and "epochs=5" not in code
    assert 'os.environ["KERAS_BACKEND"] = "jax"' in chosen[0].code


@pytest.mark.parametrize("page", docs_fences.PAGES[1:], ids=lambda page: page.name)
def test_docs_links_and_anchors_resolve(page):
    assert docs_fences.link_problems(page) == []


def test_readme_links_resolve_and_have_no_anchor():
    readme = ROOT / "README.md"
    assert docs_fences.link_problems(readme, anchors_allowed=False) == []
    relative = [target for _, target, _ in docs_fences.links(readme.read_text())
                if not docs_fences.ABSOLUTE.match(target)]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in relative, f"the README links to every docs page: {page.name}"


def test_link_checks_catch_broken_links_and_anchors(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A page\n\n## Two words\n\n[ok](a.md#two-words) [ok](#a-page) "
                               "[bad](b.md) [bad](a.md#nope) `[code](c.md)`\n")
    docs_fences.ROOT, saved = tmp_path, docs_fences.ROOT
    try:
        found = docs_fences.link_problems(docs / "a.md")
        strict = docs_fences.link_problems(docs / "a.md", anchors_allowed=False)
    finally:
        docs_fences.ROOT = saved
    assert len(found) == 2 and "(b.md): no such file" in found[0] and "#nope" in found[1], found
    assert len(strict) == 4, strict


def long_description():
    spec = importlib.util.spec_from_file_location("cl_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() runs only as __main__
    return module.long_description


def test_long_description_has_no_relative_link_anchor_or_image():
    make = long_description()
    text = make()
    assert text.startswith("# ") and "python -m cl" in text
    for _, target, _ in docs_fences.links(text):
        assert docs_fences.ABSOLUTE.match(target), target
    assert not re.search(r"<(a|img)\b", text)
    assert "(docs/keras3.md in the source distribution)" in text
    assert "(figure: docs/features.png in the source distribution)" in text
    assert make("[x](docs/a.md) ![y](docs/b.png) [z](https://e.org/#q)") == (
        "x (docs/a.md in the source distribution) y (figure: docs/b.png in the source "
        "distribution) [z](https://e.org/#q)")


def test_versions_agree():
    """The version in cl/_version.py, CITATION.cff and the changelog."""
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "cl" / "_version.py").read_text()).group(1)
    assert f'\nversion: "{version}"\n' in (ROOT / "CITATION.cff").read_text()
    assert f"\n## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
    assert pathlib.Path(ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
