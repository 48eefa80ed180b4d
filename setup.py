"""Packaging for cl. The distribution is `keras-center-loss` (the name `cl`
is taken on PyPI by an unrelated project); the import name is `cl`.

The build system is declared in pyproject.toml; the metadata lives here
because the package index page is made from README.md at build time
(`long_description`)."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "cl" / "_version.py").read_text()).group(1)

# A Markdown link or image: [label](target) or ![alt](target).
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
ABSOLUTE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:


def long_description(text=None):
    """README.md as a package index shows it. The README links to docs/
    with relative links, which work on a repository host but not on the
    index page (no repository URL exists yet): each relative link or image
    becomes plain text naming its path, e.g. "Keras 3 (docs/keras3.md in
    the source distribution)". Absolute links stay as they are."""
    if text is None:
        text = (HERE / "README.md").read_text(encoding="utf-8")

    def plain(match):
        image, label, target = match.groups()
        if ABSOLUTE.match(target):
            return match.group(0)
        kind = "figure: " if image else ""
        return f"{label} ({kind}{target} in the source distribution)"

    return LINK.sub(plain, text)


# What CI tests (.ci/run, Python 3.11): the extras' bounds are the lines it
# runs. TensorFlow is not required by the base install, so a user who
# already has tensorflow, tensorflow-cpu or a GPU build keeps it.
KERAS3 = "keras>=3.15,<3.16"
EXTRAS = {
    # TF1 graph API, Keras 2 (tf_keras), cl.tf2, and Keras 3 on TensorFlow
    # (TF >= 2.16 brings Keras 3 as tf.keras).
    "tf": ["tensorflow>=2.15,<2.22", "tf-keras>=2.15,<2.22"],
    # The CPU-only wheel of the TF 2.15 line, where tf.keras is Keras 2.
    # (From 2.16 tf-keras requires the full `tensorflow` wheel: use [tf].)
    "cpu": ["tensorflow-cpu>=2.15,<2.16"],
    # cl.keras3 on JAX or PyTorch, no TensorFlow.
    "jax": [KERAS3, "jax>=0.10,<0.11", "jaxlib>=0.10,<0.11"],
    "torch": [KERAS3, "torch>=2.13,<2.14"],
    # The demo (cl.demo) and legacy_examples/.
    "examples": ["scikit-learn>=1.3,<1.6", "matplotlib>=3.7,<3.10"],
}

if __name__ == "__main__":
    setup(
        name="keras-center-loss",
        version=VERSION,
        description=("Center loss (Wen et al., ECCV 2016) for Keras 3 (TensorFlow, JAX, "
                     "PyTorch), TF2 custom loops, Keras 2 and TF1-style graphs: "
                     "the paper's update, exact on several devices, many classes."),
        long_description=long_description(),
        long_description_content_type="text/markdown",
        author="The keras-center-loss maintainers",
        license="Apache-2.0",
        license_files=["LICENSE"],
        keywords=["center loss", "metric learning", "face recognition", "keras",
                  "tensorflow", "jax", "pytorch", "deep learning", "embeddings"],
        project_urls={
            "Paper": "https://doi.org/10.1007/978-3-319-46478-7_31",
        },
        packages=find_packages(include=["cl", "cl.*"]),
        # Newer Pythons are bounded by the TensorFlow wheels that exist for them.
        python_requires=">=3.11",
        # h5py: read_centers and Keras 2's HDF5 routes read .h5 / .keras files
        # (TensorFlow and Keras 3 depend on it too; on JAX or PyTorch without
        # TensorFlow nothing else would bring it).
        install_requires=["numpy>=1.23", "h5py>=3.10,<4"],
        extras_require=EXTRAS,
        classifiers=[
            "Development Status :: 4 - Beta",
            "Intended Audience :: Developers",
            "Intended Audience :: Science/Research",
            "Operating System :: OS Independent",
            "Programming Language :: Python :: 3",
            "Programming Language :: Python :: 3 :: Only",
            "Programming Language :: Python :: 3.11",
            "Topic :: Software Development :: Libraries :: Python Modules",
            "Topic :: Scientific/Engineering :: Artificial Intelligence",
            "Topic :: Scientific/Engineering :: Image Recognition",
        ],
    )
