"""The one place that compiles PyTensor functions: backend names → PyTensor modes.

:func:`compile_function` is the entry; the JAX linker and its options live in :mod:`.jax_mode`, our graph
rewrites in :mod:`.rewrites`, the C backend's BLAS link in :mod:`.c_blas`; :mod:`pt_kfgn.sharding` builds the
data-parallel JAX mode on top.

``"numba"`` (PyTensor 3's default linker), ``"c"`` (mode CVM, the C virtual machine; needs a BLAS to
be fast), ``"jax"`` (optional extra; CPU or GPU, whatever jax finds); ``"fast"`` (FAST_COMPILE: quick to compile,
slow to run; for tests and debugging).  The default is chosen by
measurement (README, "Backends").
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import pytensor

from pt_kfgn.backend.c_blas import link_c_blas
from pt_kfgn.backend.jax_mode import (
    jax_compile_cache,
    jax_mode,
    jax_precision,
    one_blas_thread_on_cpu,
    quiet_jax_warnings,
    xla_compiler_options,
)
from pt_kfgn.backend.rewrites import (
    FAST_BINARY_TAG,
    JAX_REDUCE_TAG,
    register_binary_elemwise,
    register_reduce_in_output_dtype,
)

BACKENDS = {"numba": "NUMBA", "c": "CVM", "jax": "JAX", "fast": "FAST_COMPILE"}
# Numba warns, at each first call, that a transposed operand of a dot is not contiguous; the layout is
# PyTensor's choice and the warning is noise for users of this package.
warnings.filterwarnings("ignore", message=r"np\.dot\(\) is faster on contiguous arrays")


def default_backend() -> str:
    """``$PT_KFGN_BACKEND`` if set, else ``"jax"`` when JAX is installed (the ``jax`` extra), else ``"numba"``.

    Measured (README "Backends", ``results/bench.json``): with JAX installed it runs every step of the
    MNIST autoencoder fastest on the 2-core CPU and compiles them six to seven times faster on a fresh machine;
    Numba needs no extra dependency.
    """
    env = os.environ.get("PT_KFGN_BACKEND")
    if env:
        return env
    return "jax" if importlib.util.find_spec("jax") and importlib.util.find_spec("jaxlib") else "numba"


def check_backend(name: str | None) -> str:
    """Validate a backend name (None → the default)."""
    name = default_backend() if name is None else name
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


def compiled_text(fn, *args) -> str:
    """The optimised HLO that XLA runs for a function compiled by a JAX mode of :func:`compile_function` (the tests
    look for its all-reduces and its kinds of products).

    ``args`` are the function's explicit inputs; its shared variables are taken as they are.
    """
    jitted = getattr(fn.maker.linker, "jitted", None)
    if jitted is None:
        raise ValueError("not a function compiled with backend='jax'")
    values = [*args, *(s.value for s in fn.input_storage[len(args):])]
    from pytensor.link.jax.dispatch import jax_typify

    return jitted.lower(*(jax_typify(v) for v in values)).compile().as_text()


def compile_function(inputs, outputs, updates=None, backend: str | None = None, products: str = "eigen",
                     static_shapes=None, mode=None, **kwargs):
    """``pytensor.function`` in the chosen backend's mode.

    ``products``: how XLA on CPU runs the products (:func:`.jax_mode.xla_compiler_options`; other backends ignore it).  The
    graph is given the static shapes of its shared variables and those in ``static_shapes`` (``{variable:
    shape}``, ``None`` for a length left free), :func:`static_shared_shapes`.  ``mode``: a JAX mode to use
    instead of the backend's (:func:`pt_kfgn.sharding.compile_on` passes its sharded one).
    """
    name = check_backend(backend)
    if mode is None:
        mode = jax_mode(products) if name == "jax" else BACKENDS[name]
    if name == "jax":  # both JAX modes
        register_reduce_in_output_dtype()
        mode = pytensor.compile.get_mode(mode).including(JAX_REDUCE_TAG)
        jax_compile_cache()
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        pairs = updates.items() if isinstance(updates, dict) else (updates or [])
        jax_precision([*outs, *(u for _, u in pairs)])
    from pt_kfgn.graph.gram import register

    register(name)  # the symmetric product AᵀA (pt_kfgn.graph.gram)
    if name == "numba":  # float32 tanh as a vectorisable rational function (pt_kfgn.fast_math) [ours]
        from pt_kfgn import fast_math

        fast_math.register_numba()
        mode = pytensor.compile.get_mode(mode).including(fast_math.TAG)
    elif name == "fast":
        register_binary_elemwise()
        mode = pytensor.compile.get_mode(mode).including(FAST_BINARY_TAG)
    if name == "c":
        link_c_blas()
    outputs, updates = static_shared_shapes(outputs, updates, static_shapes)
    return pytensor.function(inputs, outputs, updates=updates, mode=mode, on_unused_input="ignore",
                             allow_input_downcast=True, **kwargs)


def static_shared_shapes(outputs, updates=None, known=None):
    """``outputs`` and ``updates`` with every shared variable whose type leaves a length unknown seen through
    ``specify_shape(v, v.get_value().shape)``, and each variable of ``known`` through ``specify_shape(v, shape)``.

    A user's own ``pytensor.shared(W)`` has no static shape, so sizes such as a factor's ``d + 1`` are symbolic,
    and JAX cannot trace ``arange``/``eye`` over them ("JAX requires the arguments of jax.numpy.arange to be
    constants").  The shared variable itself stays the function's state (its updates are still keyed on it);
    only the graph learns its shape, as a constant, so a value of another shape assigned later needs the
    function compiled anew.
    """
    import numpy as np
    import pytensor.tensor as pt
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import ancestors

    single = not isinstance(outputs, (list, tuple))
    outs = [outputs] if single else list(outputs)
    pairs = list(updates.items() if isinstance(updates, dict) else (updates or []))
    roots = [v for v in ancestors([*outs, *(u for _, u in pairs)])
             if isinstance(v, SharedVariable) and getattr(v.type, "ndim", 0) and None in v.type.shape]
    # a length of 1 stays free: a static 1 would make the axis broadcastable and the updates' type incompatible
    replace = {v: pt.specify_shape(v, tuple(None if n == 1 else n for n in np.shape(v.get_value(borrow=True))))
               for v in roots}
    replace.update({v: pt.specify_shape(v, shape) for v, shape in (known or {}).items()
                    if any(a is None and b is not None for a, b in zip(v.type.shape, shape))})
    if not replace:
        return outputs, updates
    new = clone_replace([*outs, *(u for _, u in pairs)], replace=replace)
    new_outs, new_vals = new[:len(outs)], new[len(outs):]
    new_updates = type(updates)(zip([k for k, _ in pairs], new_vals)) if isinstance(updates, dict) else \
        list(zip([k for k, _ in pairs], new_vals))
    return (new_outs[0] if single else new_outs), (new_updates if updates is not None else None)


__all__ = ["BACKENDS", "FAST_BINARY_TAG", "JAX_REDUCE_TAG", "check_backend", "compile_function", "compiled_text",
           "default_backend", "floatx", "jax_compile_cache", "jax_mode", "jax_precision", "link_c_blas",
           "one_blas_thread_on_cpu", "quiet_jax_warnings", "static_shared_shapes", "xla_compiler_options"]
