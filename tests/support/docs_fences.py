"""The code blocks of README.md and docs/*.md, and where each one runs.

Every fenced block names its language. A Python block (```python ...) names
one tag, which says where the tests run it:

  graph         TF1 graph mode / Keras 2: tests/graph_mode/test_docs.py
  estimator     graph mode with tf.estimator (TensorFlow 2.15 only): same file
  tf2           eager TensorFlow (cl.tf2): tests/eager/test_docs.py
  keras3        Keras 3 on the environment's backend: tests/eager/test_docs.py;
                a line `os.environ["KERAS_BACKEND"] = "..."` is run with the
                environment's backend instead
  multi-device  needs several devices or worker processes, so not run here:
                it names the test that runs the same code, as
                `test=tests/<file>.py::<name>` (or `::<Class>::<name>`), and
                that test must exist

The blocks of one tag on one page run in order, as one program (a reader
pastes them in turn), in a subprocess started in an empty folder: whatever
a block needs, an earlier block of the same page and tag shows. To keep the
suites short, `epochs=N` is run as `epochs=1` (eager PyTorch takes minutes
for the pages' few epochs). Framework free: both test suites import it.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_TAGS = ("graph", "estimator", "tf2", "keras3")
TAGS = (*RUN_TAGS, "multi-device")
PYTHON = ("python", "py", "python3", "pycon", "ipython")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
BACKEND_LINE = re.compile(r'^(\s*os\.environ\["KERAS_BACKEND"\] = )"[a-z]+"', re.M)
EPOCHS = re.compile(r"\bepochs=\d+")
DONE = "ALL BLOCKS RAN"


class Block:
    def __init__(self, page, line, info, code):
        self.page, self.line, self.code = page, line, code
        words = info.split()
        self.language = words[0] if words else ""
        self.tag = words[1] if len(words) > 1 else None
        options = dict(word.split("=", 1) for word in words[2:] if "=" in word)
        self.test = options.get("test")
        self.extra = [word for word in words[2:] if "=" not in word] + [
            key for key in options if key != "test"]

    @property
    def where(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page):
    text = page.read_text(encoding="utf-8")
    return [Block(page, text.count("\n", 0, match.start()) + 1, match.group(1).strip(), match.group(2))
            for match in FENCE.finditer(text)]


def problems(page):
    """What is wrong with the fences of `page`: a block without a language,
    a Python block without a known tag, a multi-device block without an
    existing test."""
    found = []
    for block in blocks(page):
        if not block.language:
            found.append(f"{block.where}: a block without a language (```python graph, ```sh, ```text ...)")
        elif block.language.lower() in PYTHON:
            if block.language != "python" or block.tag not in TAGS or block.extra:
                found.append(f"{block.where}: ```{block.language} {block.tag or ''}: a Python block "
                             f"must be ```python <tag>, tag one of {', '.join(TAGS)}")
            elif block.tag == "multi-device":
                found += [f"{block.where}: {why}" for why in missing_test(block.test)]
            elif block.test:
                found.append(f"{block.where}: test= is for multi-device blocks; this one runs")
    return found


def missing_test(test):
    """Why `test` (tests/<file>.py::<name> or ::<Class>::<name>) does not
    name an existing test, or []."""
    if not test or "::" not in test:
        return [f"a multi-device block names the test that runs it: test=tests/<file>.py::<name> "
                f"(got {test!r})"]
    path, *names = test.split("::")
    file = ROOT / path
    if not file.is_file():
        return [f"{test}: no file {path}"]
    scope = ast.parse(file.read_text(encoding="utf-8")).body
    for name in names:
        match = [node for node in scope if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                 and node.name == name]
        if not match:
            return [f"{test}: no {name} in {path}"]
        scope = match[0].body
    if not names[-1].startswith("test_"):
        return [f"{test}: {names[-1]} is not a test"]
    return []


def groups(tags):
    """`(page, tag, [blocks])` for every page and tag in `tags` that has blocks."""
    found = []
    for page in PAGES:
        for tag in tags:
            chosen = [block for block in blocks(page) if block.language == "python" and block.tag == tag]
            if chosen:
                found.append((page, tag, chosen))
    return found


def group_id(group):
    page, tag, _ = group
    return f"{page.relative_to(ROOT)}:{tag}"


def program(chosen, backend=None):
    """The blocks as one program, with the Keras backend line set to
    `backend` and one epoch per fit; each block is announced, so a failure
    names its block."""
    parts = []
    for block in chosen:
        code = EPOCHS.sub("epochs=1", block.code)
        if backend is not None:
            code = BACKEND_LINE.sub(rf'\g<1>"{backend}"', code)
        parts.append(f"print({f'--- block at {block.where}'!r}, flush=True)\n{code}")
    return "\n".join(parts) + f"\nprint({DONE!r})\n"


def run(chosen, folder, backend=None, timeout=600):
    """Runs the blocks in a subprocess started in `folder`, importing this
    checkout's `cl`; returns (ok, output tail)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", program(chosen, backend)], cwd=folder,
                            capture_output=True, text=True, timeout=timeout, env=env)
    ok = result.returncode == 0 and result.stdout.rstrip().endswith(DONE)
    return ok, result.stdout[-4000:] + "\n" + result.stderr[-4000:]


# Links: [label](target) and ![alt](target), outside code.
LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]*)[^)]*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
ABSOLUTE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:


def prose(text, inline_code=False):
    """`text` without its code blocks (and inline code, unless asked), lines kept."""
    text = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    return text if inline_code else INLINE_CODE.sub("", text)


def links(text):
    """`(line, target, is_image)` for every link and image outside code."""
    text = prose(text)
    return [(text.count("\n", 0, match.start()) + 1, match.group(2), bool(match.group(1)))
            for match in LINK.finditer(text)]


def slug(heading):
    """The anchor a repository host gives a heading (GitHub's rule)."""
    heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page):
    seen, found = {}, set()
    text = prose(page.read_text(encoding="utf-8"), inline_code=True)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(page, anchors_allowed=True):
    """Relative links of `page` that do not resolve: a missing file, or an
    anchor that names no heading (or any anchor, where none is allowed)."""
    found = []
    for line, target, _ in links(page.read_text(encoding="utf-8")):
        if ABSOLUTE.match(target):
            continue
        path, _, anchor = target.partition("#")
        where = f"{page.relative_to(ROOT)}:{line}: ({target})"
        if not anchors_allowed and "#" in target:
            found.append(f"{where}: no anchors here (a package index page cannot follow them)")
            continue
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or ROOT not in file.parents:
            found.append(f"{where}: no such file in the repository")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            found.append(f"{where}: no heading with the anchor #{anchor} in {file.name}")
    return found
