"""setup.py - what pyproject.toml cannot declare for setuptools:

- the version: SPPROF_VERSION_STRING of spprof.h (the one place it is written);
- the headers spprof.h and spprof_python.h copied into the package (spprof/include/, spprof.get_include());
- the extension spprof._spprof, with libunwind (native=True through code without frame pointers) when its
  header is found and SPPROF_LIBUNWIND is not 0, as tools/build-ext.sh does for `make`;
- libspprof_alloc.so (Linux), the LD_PRELOAD library of `spprof record --memory`: a plain shared library,
  named without the extension suffix.
"""
import os
import re
import shutil
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HEADERS = ("spprof.h", "spprof_python.h")
ALLOC_SHIM = "spprof.libspprof_alloc"


def header_version():
    with open("spprof.h", encoding="utf-8") as f:
        m = re.search(r'^#define SPPROF_VERSION_STRING "([^"]+)"', f.read(), re.M)
    if not m:
        raise SystemExit("setup.py: no #define SPPROF_VERSION_STRING in spprof.h")
    return m.group(1)


class BuildPy(build_py):
    """Also copies the headers into spprof/include/ of the build (they live at the top of the source tree)."""

    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "spprof", "include")
        os.makedirs(dest, exist_ok=True)
        for h in HEADERS:
            shutil.copyfile(h, os.path.join(dest, h))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, "spprof", "include", h) for h in HEADERS]


class BuildExt(build_ext):
    def get_ext_filename(self, fullname):
        # loaded by LD_PRELOAD under this exact name, not imported (called with the full or the last name)
        if fullname in (ALLOC_SHIM, ALLOC_SHIM.rsplit(".", 1)[1]):
            return os.path.join(*fullname.split(".")[:-1], "libspprof_alloc.so")
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        if ext.name == ALLOC_SHIM:
            return []  # not a module: no PyInit_ function
        return super().get_export_symbols(ext)

    def have_libunwind(self):
        if os.environ.get("SPPROF_LIBUNWIND", "1") == "0":
            return False
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "have_libunwind.c")
            with open(src, "w") as f:
                f.write("#include <libunwind.h>\nint main(void) { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=tmp)
            except Exception:
                return False
        return True

    def build_extensions(self):
        unwind = sys.platform.startswith("linux") and self.have_libunwind()
        for ext in self.extensions:
            if ext.name == "spprof._spprof" and unwind:
                ext.define_macros.append(("SPPROF_USE_LIBUNWIND", None))
                ext.libraries.append("unwind")
        print(f"spprof: native unwinder: {'libunwind' if unwind else 'frame pointers'} "
              "(libunwind when its header is found and SPPROF_LIBUNWIND is not 0)")
        super().build_extensions()


# Frame pointers in our own code: the native walker follows them (-mno-omit-leaf-frame-pointer where known).
CFLAGS = ["-std=c99", "-fno-strict-aliasing", "-fno-omit-frame-pointer"]
if sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "aarch64"):
    CFLAGS.append("-mno-omit-leaf-frame-pointer")

extensions = [
    Extension("spprof._spprof", sources=["python/_spprof.c"], depends=list(HEADERS),
              define_macros=[("_GNU_SOURCE", "1")], extra_compile_args=CFLAGS, extra_link_args=["-pthread"]),
]
if sys.platform.startswith("linux"):
    extensions.append(
        Extension(ALLOC_SHIM, sources=["python/_spprof_alloc.c"], depends=["spprof.h"],
                  define_macros=[("_GNU_SOURCE", "1")], extra_compile_args=CFLAGS + ["-fvisibility=hidden"],
                  libraries=["dl", "rt"], extra_link_args=["-pthread"]))

# setuptools' own build tree under build/setuptools/ (beside the Makefile's outputs, not mixed with them)
setup(version=header_version(), ext_modules=extensions, cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
      options={"build": {"build_base": os.path.join("build", "setuptools")}})
