"""Build every Cython kernel under src/gwlb_fast/_kernels (one extension per .pyx).

GWLB_FAST_CYTHON_DEBUG=1 turns on bounds and initialisation checks (debug build for tests);
GWLB_FAST_CYTHON_ANNOTATE=1 writes the annotated HTML next to each .pyx.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("GWLB_FAST_CYTHON_DEBUG") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# system libraries a kernel links (Debian packages the README's first command installs)
LIBRARIES = {"match": ["hs"]}  # Hyperscan: libhyperscan-dev

extensions = [
    Extension(
        "gwlb_fast._kernels." + os.path.splitext(os.path.basename(path))[0],
        [path],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
        libraries=LIBRARIES.get(os.path.splitext(os.path.basename(path))[0], []),
    )
    for path in sorted(glob.glob("src/gwlb_fast/_kernels/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("GWLB_FAST_CYTHON_ANNOTATE") == "1",
        force=DEBUG,
    )
)
