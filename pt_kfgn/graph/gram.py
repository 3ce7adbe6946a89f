"""``AᵀA`` as one Op, so that the symmetric product runs as a symmetric rank-k update (BLAS ``syrk``).

The Kronecker factors are Gram matrices: ``Q = ĀᵀĀ / N`` (eq. 21), KFRA's ``E[f′f′ᵀ]`` (eq. 26) and the
sampled or exact ``Σ SᵀS / N`` of KFAC and KFLR (eq. 25).  A general product computes both triangles of a
symmetric result; ``syrk`` computes one, half the arithmetic.  PyTensor has no symmetric product and
Numba's ``np.dot`` calls ``gemm``.

Per backend: Numba calls SciPy's BLAS ``?syrk`` (the BLAS its ``np.dot`` uses) and mirrors the computed
triangle, faster than ``np.dot(A.T, A)`` (calling NumPy's ``A.T @ A``, also ``syrk``, from object mode was
slower: a second OpenBLAS thread pool then competes for the cores; docs/performance.md); the C backend and
FAST_COMPILE use :meth:`Gram.perform` (NumPy); JAX gets
``A.T @ A`` for XLA with its lower triangle mirrored (XLA's float64 GEMM is not bit-symmetric).
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op


class Gram(Op):
    """``gram(A) = AᵀA`` for a matrix ``A`` of shape ``(n, d)``: a symmetric ``(d, d)`` matrix."""

    __props__ = ()

    def make_node(self, A):
        A = pt.as_tensor_variable(A)
        if A.ndim != 2:
            raise TypeError(f"gram needs a matrix, got a {A.ndim}-d tensor")
        d = A.type.shape[1]
        return Apply(self, [A], [pt.tensor(dtype=A.dtype, shape=(d, d))])

    def perform(self, node, inputs, output_storage):
        (A,) = inputs
        output_storage[0][0] = np.ascontiguousarray(A.T @ A)  # NumPy: syrk for a product with its transpose

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][1], shapes[0][1])]

    def L_op(self, inputs, outputs, output_grads):
        (A,), (g,) = inputs, output_grads
        return [pt.dot(A, g + g.T)]  # d tr(Gᵀ AᵀA) / dA = A (G + Gᵀ)


gram = Gram()

_registered = set()


def register(backend: str) -> None:
    """Teach the backend's dispatcher the Gram Op (once per backend; imports numba or jax only then)."""
    if backend in _registered or backend not in ("numba", "jax"):
        return
    if backend == "numba":
        _register_numba()
    else:
        from pytensor.link.jax.dispatch import jax_funcify

        @jax_funcify.register(Gram)
        def _jax_gram(op, **kwargs):
            import jax.numpy as jnp

            def gram_impl(A):  # XLA's GEMM is not bit-symmetric (float64 on CPU): mirror the lower triangle
                G = A.T @ A
                return jnp.tril(G) + jnp.tril(G, -1).T

            return gram_impl
    _registered.add(backend)


def _register_numba() -> None:
    """Numba: ``?syrk`` from SciPy's BLAS (the one Numba's ``np.dot`` uses, so no second BLAS thread pool
    competes for the cores), then the computed triangle mirrored.  The BLAS pointer is fetched at run time and
    cached the way PyTensor's own LAPACK calls do (``pytensor.link.numba.cache._call_cached_ptr``, PyTensor 3.0.7),
    so the compiled step stays cacheable."""
    import numba
    from numba.core import types
    from numba.core.extending import get_cython_function_address
    from pytensor.link.numba.cache import _call_cached_ptr
    from pytensor.link.numba.dispatch import basic as numba_basic
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    from pytensor.link.numba.dispatch.linalg._LAPACK import val_to_int_ptr

    # the numba cache key: this function's source, so that an edited implementation is never loaded stale
    key = hashlib.sha256(inspect.getsource(_register_numba).encode()).hexdigest()
    i32p = types.CPointer(types.int32)

    @register_funcify_and_cache_key(Gram)
    def _numba_gram(op, node, **kwargs):
        dtype = np.dtype(node.outputs[0].dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"gram: float32 or float64, got {dtype}")
        name = {np.float32: "ssyrk", np.float64: "dsyrk"}[dtype.type]
        fp = types.CPointer(numba.from_dtype(dtype))
        syrk_type = types.FunctionType(types.void(i32p, i32p, i32p, i32p, fp, fp, i32p, fp, fp, i32p))
        one, zero = dtype.type(1), dtype.type(0)

        @numba_basic.numba_njit
        def syrk_pointer():
            with numba.objmode(ptr=types.intp):
                ptr = get_cython_function_address("scipy.linalg.cython_blas", name)
            return ptr

        @numba_basic.numba_njit
        def gram_impl(A):
            A = np.ascontiguousarray(A)
            k, d = A.shape
            out = np.empty((d, d), dtype=A.dtype)
            if d == 0:
                return out
            if k == 0:
                out[:] = zero
                return out
            alpha, beta = np.array([one]), np.array([zero])
            # Column-major view: A (k, d) in C order is Aᵀ (d, k) with leading dimension d; C = Aᵀ (Aᵀ)ᵀ = AᵀA.
            # "L" fills C's lower triangle in column-major order, i.e. out[i, j] for j >= i in row-major order.
            syrk = _call_cached_ptr(syrk_pointer, syrk_type, name)
            syrk(val_to_int_ptr(ord("L")), val_to_int_ptr(ord("N")), val_to_int_ptr(d), val_to_int_ptr(k),
                 alpha.ctypes, A.ctypes, val_to_int_ptr(d), beta.ctypes, out.ctypes, val_to_int_ptr(d))
            for i in range(1, d):  # mirror: out[i, j] = out[j, i] for j < i
                for j in range(i):
                    out[i, j] = out[j, i]
            return out

        return gram_impl, key
