# setup.py - builds myext (myext.c, next to this file) against the headers of the installed spprof, as the
# README shows: `pip install spprof setuptools && pip install --no-build-isolation .` in this directory (or
# list "spprof" in your pyproject.toml's [build-system] requires). tests/install_smoke.py builds it.
import spprof
from setuptools import Extension, setup

setup(name="myext", version="0.1", ext_modules=[Extension(
    "myext", ["myext.c"],
    include_dirs=[spprof.get_include()],          # spprof.h and spprof_python.h, this spprof's version
    extra_compile_args=["-std=c99", "-fno-omit-frame-pointer"])])
