"""The one place that compiles PyTensor functions: backend names → PyTensor modes.

``"numba"`` (PyTensor 3's default linker), ``"c"`` (mode CVM, the C virtual machine; needs a BLAS to
be fast), ``"jax"`` (optional extra; CPU or GPU, whatever jax finds); ``"fast"`` (FAST_COMPILE: quick to compile,
slow to run; for tests and debugging).  The default is chosen by
measurement (README, "Backends").
"""

from __future__ import annotations

import os
import warnings

import pytensor

BACKENDS = {"numba": "NUMBA", "c": "CVM", "jax": "JAX", "fast": "FAST_COMPILE"}
# Numba warns, at each first call, that a transposed operand of a dot is not contiguous; the layout is
# PyTensor's choice and the warning is noise for users of this package.
warnings.filterwarnings("ignore", message=r"np\.dot\(\) is faster on contiguous arrays")

DEFAULT_BACKEND = os.environ.get("PT_KFGN_BACKEND", "numba")


def check_backend(name: str | None) -> str:
    """Validate a backend name (None → the default)."""
    name = DEFAULT_BACKEND if name is None else name
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not one of {sorted(BACKENDS)}")
    if name == "jax":
        try:
            import jax  # noqa: F401
        except ImportError as err:
            raise ImportError("backend 'jax' needs the optional extra: pip install 'pt_kfgn[jax]'") from err
    return name


def floatx(dtype: str):
    """Context in which Python float constants become ``dtype`` (so float32 graphs stay float32)."""
    return pytensor.config.change_flags(floatX=dtype)


def check_devices(devices, backend: str):
    """Validate ``devices`` (None: one device) for a backend: several devices need ``backend="jax"``.

    Returns the device mesh (:func:`pt_kfgn.sharding.device_mesh`) or None."""
    if devices is None:
        return None
    if backend != "jax":
        raise ValueError(f"devices={devices!r} needs backend='jax' (got backend={backend!r})")
    from pt_kfgn.sharding import device_mesh

    return device_mesh(devices)


def compile_function(inputs, outputs, updates=None, backend: str | None = None, mesh=None, batch_inputs: int = 2,
                     **kwargs):
    """``pytensor.function`` in the chosen backend's mode.

    With a device ``mesh`` (:func:`check_devices`; JAX only), the first ``batch_inputs`` inputs — the
    mini-batch ``X``, ``Y`` (and KFAC's noise) — are split over the devices and everything else is replicated
    (:mod:`pt_kfgn.sharding`).
    """
    name = check_backend(backend)
    mode = BACKENDS[name]
    if mesh is not None:
        from pt_kfgn.sharding import sharded_mode

        mode = sharded_mode(mesh, n_batch_inputs=batch_inputs)
    from pt_kfgn.graph.gram import register

    register(name)  # the symmetric product AᵀA (pt_kfgn.graph.gram)
    if name == "numba":  # float32 tanh as a vectorisable rational function (pt_kfgn.fast_math) [ours]
        from pt_kfgn import fast_math

        fast_math.register_numba()
        mode = pytensor.compile.get_mode(mode).including(fast_math.TAG)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
        return pytensor.function(inputs, outputs, updates=updates, mode=mode, on_unused_input="ignore",
                                 allow_input_downcast=True,
                                 **kwargs)
