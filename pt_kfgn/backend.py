"""The one place that compiles PyTensor functions: backend names → PyTensor modes.

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


# [ours] FAST_COMPILE evaluates an Elemwise by NumPy's ufunc only when its arity is the ufunc's; a product or sum
# of three or more tensors (common in gradients) falls back to a Python call per element (``np.prod`` of each
# scalar tuple). The "fast" mode splits them into binary ufunc calls (same arithmetic up to the order of the
# terms): the test suite's long-run smoke test fell from 63 to 33 s.
FAST_BINARY_TAG = "pt_kfgn_binary_elemwise"
_FAST_BINARY_REWRITE = "pt_kfgn_split_elemwise"


def _register_rewrite(name: str, tag: str, position: float, tracks, transform) -> None:
    """Register ``transform(fgraph, node)`` (None: leave the node) once, as the PyTensor graph rewrite ``name`` on
    nodes of the Op types ``tracks``, applied by the modes that include ``tag``."""
    from pytensor.compile import optdb
    from pytensor.graph.rewriting.basic import in2out, node_rewriter

    if name not in optdb:
        optdb.register(name, in2out(node_rewriter(tracks)(transform)), tag, position=position)


def _split_elemwise(fgraph, node):
    """A sum or product of three or more tensors as binary ones (:data:`FAST_BINARY_TAG`)."""
    from pytensor.scalar.basic import Add, Mul

    if not isinstance(node.op.scalar_op, Add | Mul) or len(node.inputs) <= 2 or node.op.inplace_pattern:
        return None
    out = node.inputs[0]
    for x in node.inputs[1:]:
        out = node.op.make_node(out, x).outputs[0]
    return [pytensor.tensor.cast(out, node.outputs[0].dtype)] if out.dtype != node.outputs[0].dtype else [out]


def _register_binary_elemwise() -> None:
    from pytensor.tensor.elemwise import Elemwise

    _register_rewrite(_FAST_BINARY_REWRITE, FAST_BINARY_TAG, 49.5, [Elemwise], _split_elemwise)


def _calls_lapack(fgraph) -> bool:
    """Whether a graph holds a LAPACK-backed linear-algebra op (Cholesky, triangular solves, eigh, ...)."""
    return any(type(getattr(node.op, "core_op", node.op)).__module__.startswith("pytensor.tensor.linalg")
               for node in fgraph.apply_nodes)


# [ours] PyTensor accumulates float32 sums in float64 (``Sum.acc_dtype``), and its JAX dispatch (3.0.7) returns the
# reduction in that accumulator dtype instead of the node's output dtype. With JAX's x64 mode off, as in a
# float32-only process, the cast is a no-op; once it is on (PyTensor sets it from floatX = float64 at its first
# import, and :func:`jax_precision` sets it for a float64 graph) a float32 step's bias gradients come out float64,
# the promotion spreads through everything computed from them, and the parameters are written back as float64: the
# MNIST autoencoder's float32 KFRA step ran 2.5 × slower with float64 parameters (859 against 349 ms, measured).
# The JAX modes reduce in the output dtype instead — what JAX does for float32 with x64 off.
JAX_REDUCE_TAG = "pt_kfgn_jax_reduce_in_output_dtype"
_REDUCE_REWRITE = "pt_kfgn_reduce_in_output_dtype"


def _reduce_in_output_dtype(fgraph, node):
    """A reduction whose accumulator is wider than its output, in the output's dtype (:data:`JAX_REDUCE_TAG`)."""
    acc, out = getattr(node.op, "acc_dtype", None), node.outputs[0].dtype
    if acc is None or acc == out:
        return None
    return [node.op.clone(acc_dtype=out)(*node.inputs)]


def _register_reduce_in_output_dtype() -> None:
    from pytensor.tensor.elemwise import CAReduce

    _register_rewrite(_REDUCE_REWRITE, JAX_REDUCE_TAG, 49.6, [CAReduce], _reduce_in_output_dtype)


_BLAS_CONTROLLER = []


def one_blas_thread_on_cpu(jitted, fgraph):
    """Run a jitted JAX graph that calls LAPACK, on CPU, with **one OpenBLAS thread** [ours, measured].

    On CPU, XLA runs LAPACK (Cholesky, triangular solves) as calls into SciPy's OpenBLAS, and runs independent
    calls (the layers' factorisations) concurrently on its own threads; with OpenBLAS's threads on top the two
    pools fight over the cores: one OpenBLAS thread more than halves the KFRA step's damped solves on the 2-core
    CPU (docs/performance.md; ``benchmarks/profile_step.py``). The limit (threadpoolctl, ≈ 10 µs) holds while
    the call runs, which waits for its results, and is lifted afterwards, so Numba or NumPy work in the same
    process keeps its threads. Graphs without LAPACK calls (e.g. an Adam step), other platforms, or a missing threadpoolctl:
    ``jitted`` unchanged.
    """
    import jax

    if jax.default_backend() != "cpu" or not _calls_lapack(fgraph):
        return jitted
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return jitted
        _BLAS_CONTROLLER.append(ThreadpoolController())
    controller = _BLAS_CONTROLLER[0]

    def call(*args):
        with controller.limit(limits=1, user_api="blas"):
            return jax.block_until_ready(jitted(*args))

    call.jitted = jitted
    return call


def jax_precision(variables) -> None:
    """Let JAX compute in float64 when a graph's inputs or shared variables (data, parameters) are float64.

    JAX computes in float32 unless its x64 flag is on, and PyTensor sets that flag once, from ``floatX``, when
    its JAX dispatch is first imported; a float64 graph compiled after a float32 one would silently run in
    float32. Switching x64 on keeps float32 graphs float32 — PyTensor states every dtype, and the JAX modes of
    :func:`compile_function` reduce in the output dtype where PyTensor's dispatch would return its float64
    accumulator (``JAX_REDUCE_TAG``) —; those jitted before retrace once.
    """
    import jax
    import pytensor.link.jax.dispatch  # noqa: F401  (sets x64 from floatX on first import)
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors

    roots = [v for v in ancestors(variables) if v.owner is None and not isinstance(v, Constant)]
    if not jax.config.jax_enable_x64 and any(getattr(v, "dtype", None) == "float64" for v in roots):
        jax.config.update("jax_enable_x64", True)


def jax_compile_cache() -> None:
    """Give JAX a persistent compilation cache beside PyTensor's (``<compiledir>/jax``) unless one is set [ours].

    PyTensor caches what the Numba and C backends compile; for JAX it only rewrites the graph, and XLA compiled
    every step function again in every process. With this cache a second process compiles the step kinds in
    about half the time (docs/performance.md); a fresh machine, or a fresh
    ``PYTENSOR_FLAGS=base_compiledir=...``, still starts empty. A cache directory the user gave JAX
    (``jax_compilation_cache_dir`` or ``JAX_COMPILATION_CACHE_DIR``) is left as it is.
    """
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", os.path.join(pytensor.config.compiledir, "jax"))


# [ours, measured] How XLA on CPU runs the products of a compiled function (``compile_function(products=...)``).
# XLA (jaxlib 0.10.2) hands the products whose operands it can read row by row to YNNPACK fusions and the rest (the
# Gram products ``AᵀA`` and the weight gradients ``AᵀΔ``, which contract the batch axis) to Eigen. Measured on the
# MNIST autoencoder, float32, 2-core CPU, each A/B interleaved in one process (README "Performance"):
# - "eigen", every product by Eigen: the Adam, KFRA and KFAC steps 2-5 % faster than with XLA's choice, the cheap
#   steps of amortised KFRA 10 % faster: the default;
# - "xla", XLA's own choice: Hessian-free's step (its forward pass and CG's Gauss-Newton products) 5 % faster.
# A user's own ``XLA_FLAGS`` choice wins over both.
_XLA_CPU_OPTIONS = {"eigen": {"xla_cpu_experimental_ynn_fusion_type": ""}, "xla": {}}


def xla_compiler_options(products: str = "eigen") -> dict:
    """The XLA options a JAX-compiled function gets: on CPU, those of its ``products`` policy
    (:data:`_XLA_CPU_OPTIONS`) that ``$XLA_FLAGS`` does not set itself; elsewhere none."""
    import jax

    if products not in _XLA_CPU_OPTIONS:
        raise ValueError(f"products={products!r} is not one of {sorted(_XLA_CPU_OPTIONS)}")
    if jax.default_backend() != "cpu":
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in _XLA_CPU_OPTIONS[products].items() if k not in flags}


# Two warnings every JAX step printed that no user can act on [ours, narrowly matched]: PyTensor drops the
# broadcast Asserts of our graphs when it converts them (their shapes are checked before each step), and JAX
# truncates the int64 index arithmetic of PyTensor's graphs to int32 (indices and sizes stay far below 2³¹).
_HARMLESS_JAX_WARNINGS = (r"Skipping Assert\{msg='Could not broadcast dimensi.*as JAX tracing would remove it",
                          r"Explicitly requested dtype int64 requested in \w+ is not available")


def quiet_jax_warnings() -> None:
    """Silence :data:`_HARMLESS_JAX_WARNINGS` (and nothing else)."""
    import warnings

    for message in _HARMLESS_JAX_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def jax_mode(products: str = "eigen"):
    """PyTensor's JAX mode: the graph jitted with the :func:`xla_compiler_options` of ``products``, and
    :func:`one_blas_thread_on_cpu` around it."""
    quiet_jax_warnings()
    from pytensor.compile.mode import JAX, Mode
    from pytensor.link.jax.linker import JAXLinker

    class Linker(JAXLinker):
        def jit_compile(self, fn):
            if self.scalar_shape_inputs:  # PyTensor's jit turns those inputs into Python ints
                return one_blas_thread_on_cpu(super().jit_compile(fn), self.fgraph)
            import jax

            self.jitted = jax.jit(fn, compiler_options=xla_compiler_options(products))
            return one_blas_thread_on_cpu(self.jitted, self.fgraph)

    return Mode(Linker(), JAX.provided_optimizer)


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

    ``products``: how XLA on CPU runs the products (:data:`_XLA_CPU_OPTIONS`; other backends ignore it).  The
    graph is given the static shapes of its shared variables and those in ``static_shapes`` (``{variable:
    shape}``, ``None`` for a length left free), :func:`static_shared_shapes`.  ``mode``: a JAX mode to use
    instead of the backend's (:func:`pt_kfgn.sharding.compile_on` passes its sharded one).
    """
    name = check_backend(backend)
    if mode is None:
        mode = jax_mode(products) if name == "jax" else BACKENDS[name]
    if name == "jax":  # both JAX modes
        _register_reduce_in_output_dtype()
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
        _register_binary_elemwise()
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
