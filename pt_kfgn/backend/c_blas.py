"""A BLAS for PyTensor's C backend (mode CVM): the OpenBLAS of the ``c`` extra [ours]."""

from __future__ import annotations

import os

import pytensor

# The reference BLAS routines (levels 1-3), which PyTensor's C code declares with Fortran names (``sgemm_``).
_BLAS_ROUTINES = ("rotg", "rotmg", "rot", "rotm", "swap", "scal", "copy", "axpy", "dot", "dotu", "dotc", "nrm2", "asum",
                  "gemv", "gbmv", "hemv", "hbmv", "hpmv", "symv", "sbmv", "spmv", "trmv", "tbmv", "tpmv", "trsv",
                  "tbsv", "tpsv", "ger", "geru", "gerc", "her", "hpr", "her2", "hpr2", "syr", "spr", "syr2", "spr2",
                  "gemm", "symm", "hemm", "syrk", "herk", "syr2k", "her2k", "trmm", "trsm")
_BLAS_NAMES = [*(p + r for p in "sdcz" for r in _BLAS_ROUTINES),
               "isamax", "idamax", "icamax", "izamax", "sdsdot", "dsdot", "scnrm2", "dznrm2", "scasum", "dzasum",
               "csscal", "zdscal", "csrot", "zdrot", "xerbla"]


def link_c_blas() -> str:
    """Give PyTensor's C backend a real BLAS to link when it found none [ours, measured]: the OpenBLAS of the
    ``c`` extra (``pip install 'pt_kfgn[c]'``, the ``scipy-openblas32`` wheel that NumPy and SciPy build against).

    Without one, PyTensor's C products fall back on NumPy's C API and it warns that "operations that might
    benefit from BLAS will be severely degraded" (the KFRA step is about a fifth slower then; docs/backends.md).
    The wheel's symbols carry a prefix (``scipy_sgemm_``), so every BLAS routine that PyTensor's C code declares is renamed to
    the library's by a macro in the flags. A ``blas__ldflags`` already in force (the user's ``PYTENSOR_FLAGS`` or
    ``.pytensorrc``, an assignment, or PyTensor's own search, which runs on the first read) is kept; without the
    extra, PyTensor searches the system and warns if it finds none. Returns the flags in force.
    """
    import ctypes
    import re

    param = type(pytensor.config).__dict__["blas__ldflags"]
    if hasattr(param, "val"):  # set, or already searched for: not ours to change
        return pytensor.config.blas__ldflags
    try:
        import scipy_openblas32 as openblas
    except ImportError:
        return pytensor.config.blas__ldflags  # PyTensor's search (and its warning when it finds nothing)
    lib_dir = openblas.get_lib_dir()
    lib = ctypes.CDLL(os.path.join(lib_dir, openblas.get_library(fullname=True)))
    prefix = re.search(r"BLAS_SYMBOL_PREFIX=(\w+)", openblas.get_pkg_config()).group(1)
    names = [n for n in _BLAS_NAMES if hasattr(lib, f"{prefix}{n}_")]
    pytensor.config.blas__ldflags = " ".join([f"-L{lib_dir}", f"-l{openblas.get_library()}", f"-Wl,-rpath,{lib_dir}",
                                              *(f"-D{n}_={prefix}{n}_" for n in names)])
    return pytensor.config.blas__ldflags


