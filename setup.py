# SPDX-License-Identifier: MIT
"""Build the `mring` Python package: the C extension mring._mring is compiled
from python/_mring.c together with the library sources src/*.c, so no
installed libmring is needed.

    python3 -m pip install --no-build-isolation .

Build artefacts go to a private temporary directory, never into the
repository (build/ there is the CMake build tree).
"""
import atexit
import glob
import os
import shutil
import tempfile

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# setuptools and pip run setup.py with the source tree as cwd
os.chdir(HERE)

_TMP = os.environ.get("MRING_PY_BUILD_DIR")
if not _TMP:
    _TMP = tempfile.mkdtemp(prefix="mring-pybuild-")
    # every setuptools command (egg_info, bdist_wheel) copies its result out
    # before the process ends
    atexit.register(shutil.rmtree, _TMP, True)

lib_sources = sorted(glob.glob("src/*.c"))  # src/tool/ (the CLI) is not globbed

ext = Extension(
    "mring._mring",
    sources=["python/_mring.c"] + lib_sources,
    include_dirs=["include", "src"],
    extra_compile_args=["-std=gnu11", "-O2", "-fno-fast-math",
                        "-fvisibility=hidden", "-Wall", "-Wno-unused-function"],
    libraries=["pthread", "m"],
)

setup(
    name="mring",
    version="0.1.0",
    description="Nanosecond metric logging through a shared-memory ring (Python binding)",
    license="MIT",
    python_requires=">=3.9",
    package_dir={"": "python"},
    packages=["mring"],
    ext_modules=[ext],
    zip_safe=False,
    options={
        "build": {"build_base": os.path.join(_TMP, "build")},
        "egg_info": {"egg_base": _TMP},
        "bdist_wheel": {"bdist_dir": os.path.join(_TMP, "bdist")},
    },
)
