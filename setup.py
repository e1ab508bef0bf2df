"""The compiled part of funnelsim: the existing-customer cohort kernel (funnelsim/_cohort.c).

Everything else is declared in pyproject.toml. The kernel draws with NumPy's own samplers
(the static library libnpyrandom that NumPy ships for this), so it builds against NumPy.
"""

import os

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "funnelsim._cohort",
            sources=["funnelsim/_cohort.c"],
            include_dirs=[numpy.get_include()],
            library_dirs=[os.path.join(os.path.dirname(numpy.__file__), "random", "lib")],
            libraries=["npyrandom", "m"],
            extra_compile_args=["-O3"],
        )
    ]
)
