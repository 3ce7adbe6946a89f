"""The JAX backend: PyTensor's JAX linker with our XLA options, one OpenBLAS thread around LAPACK calls on
CPU, float64 when a graph needs it, a persistent compilation cache, and quiet harmless warnings."""

from __future__ import annotations

import os

import pytensor
from pytensor.link.jax.linker import JAXLinker


def _calls_lapack(fgraph) -> bool:
    """Whether a graph holds a LAPACK-backed linear-algebra op (Cholesky, triangular solves, eigh, ...)."""
    return any(type(getattr(node.op, "core_op", node.op)).__module__.startswith("pytensor.tensor.linalg")
               for node in fgraph.apply_nodes)


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


class _Linker(JAXLinker):
    """PyTensor's JAX linker, jitting with the :func:`xla_compiler_options` of :attr:`products` and with
    :func:`one_blas_thread_on_cpu` around the call.  PyTensor instantiates a linker's class anew for each
    function (``type(linker)()``), so the policy is a class attribute: one subclass per policy."""

    products = "eigen"

    def jit_compile(self, fn):
        if self.scalar_shape_inputs:  # PyTensor's jit turns those inputs into Python ints
            return one_blas_thread_on_cpu(super().jit_compile(fn), self.fgraph)
        import jax

        self.jitted = jax.jit(fn, compiler_options=xla_compiler_options(self.products))
        return one_blas_thread_on_cpu(self.jitted, self.fgraph)


_LINKERS = {p: _Linker if p == "eigen" else type(f"_Linker_{p}", (_Linker,), {"products": p})
            for p in _XLA_CPU_OPTIONS}


def jax_mode(products: str = "eigen"):
    """PyTensor's JAX mode: the graph jitted with the :func:`xla_compiler_options` of ``products``, and
    :func:`one_blas_thread_on_cpu` around it."""
    quiet_jax_warnings()
    from pytensor.compile.mode import JAX, Mode

    if products not in _LINKERS:
        raise ValueError(f"products={products!r} is not one of {sorted(_LINKERS)}")
    return Mode(_LINKERS[products](), JAX.provided_optimizer)
