"""Packaging for cl. The distribution is `keras-center-loss` (the name `cl`
is taken on PyPI by an unrelated project); the import name is `cl`."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "cl" / "_version.py").read_text()).group(1)

setup(
    name="keras-center-loss",
    version=VERSION,
    description=("Center loss (Wen et al., ECCV 2016) for Keras 2 and "
                 "TF1-style TensorFlow graphs: correct, hardened, drop-in."),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["cl", "cl.*"]),
    # What CI tests (.ci/run, on Python 3.11): 3.9 and 3.10 are not tested.
    # Newer Pythons are bounded by the TensorFlow wheels that exist for them.
    python_requires=">=3.11",
    # TensorFlow is not required here, so a user who already has tensorflow,
    # tensorflow-cpu or a GPU build is never made to install a second copy.
    # Pick one with an extra:
    #   [tf]  tensorflow + tf-keras  (tf-keras itself requires `tensorflow`)
    #   [cpu] tensorflow-cpu, for TF 2.15 (tf.keras is Keras 2 there); on
    #         TF >= 2.16 add tf-keras with `pip install --no-deps tf-keras`.
    # h5py: read_centers and Keras 2's HDF5 routes read .h5 / .keras files
    # (TensorFlow and Keras 3 depend on it too; without TensorFlow, on JAX or
    # PyTorch, nothing else would bring it).
    install_requires=["numpy>=1.23", "h5py>=3.1"],
    extras_require={
        "tf": ["tensorflow>=2.15,<2.22", "tf-keras>=2.15,<2.22"],
        "cpu": ["tensorflow-cpu>=2.15,<2.22"],
        "examples": ["scikit-learn>=1.3", "matplotlib>=3.7"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
