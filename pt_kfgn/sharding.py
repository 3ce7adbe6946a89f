"""Data-parallel steps on several devices: PyTensor's JAX function, jitted with shardings (GSPMD).

PyTensor's JAX backend turns a rewritten ``FunctionGraph`` into one JAX callable (``jax_funcify``) and jits it.
:class:`ShardedJAXLinker` jits that same callable with ``in_shardings``: the mini-batch inputs split along their
first axis over a one-axis device mesh (``"batch"``), every other input — parameters, damping, Kronecker
factors, caches, RNG keys, all of a step's state — replicated, and every output replicated.  XLA's SPMD
partitioner then turns each sum over the batch (the loss, the gradient, ``ĀᵀĀ``, ``E[f'f'ᵀ]``, the forward-mode
``δᵀḠδ``) into a per-device partial sum followed by an **all-reduce**; the rest of the step (Cholesky factors,
solves, α*, the guarded update) runs replicated.  No data is moved by code of ours.

The step's graph is the one-device graph, so a step on N devices equals a step on one device up to the
order of floating-point summation (``tests/test_sharding.py``).  KFAC's sample noise is drawn on the host
(:meth:`pt_kfgn.graph.losses.Loss.draw_noise`) and is a batch input like ``X``: each device gets the rows of
its own datapoints, and the samples do not depend on the number of devices.

Several hosts: call ``jax.distributed.initialize()`` in every process before building the optimiser, and pass
a :class:`jax.sharding.Mesh` over ``jax.devices()`` (all hosts' devices) as ``devices``; each process then feeds
the same global batch (README, "Several devices and hosts").
"""

from __future__ import annotations

import numpy as np

from pt_kfgn.backend import compile_function, one_blas_thread_on_cpu, xla_compiler_options

AXIS = "batch"


def check_devices(devices, backend: str):
    """Validate ``devices`` (None: one device) for a backend: several devices need ``backend="jax"``.

    Returns the device mesh (:func:`device_mesh`) or None."""
    if devices is None:
        return None
    if backend != "jax":
        raise ValueError(f"devices={devices!r} needs backend='jax' (got backend={backend!r})")
    return device_mesh(devices)


def compile_on(mesh, inputs, outputs, updates=None, backend=None, batch_inputs: int = 2, batch_outputs=(),
               products: str = "eigen", **kwargs):
    """:func:`pt_kfgn.backend.compile_function` on one device (``mesh`` None) or data-parallel over ``mesh``:
    the first ``batch_inputs`` inputs — the mini-batch ``X``, ``Y`` (and KFAC's noise) — split over the
    devices, everything else replicated; the outputs at the indices ``batch_outputs`` stay split."""
    mode = None if mesh is None else sharded_mode(mesh, n_batch_inputs=batch_inputs,
                                                  batch_outputs=tuple(batch_outputs), products=products)
    return compile_function(inputs, outputs, updates=updates, backend=backend, products=products, mode=mode,
                            **kwargs)


def device_mesh(devices):
    """A one-axis :class:`jax.sharding.Mesh` from a device count or a given mesh.

    Parameters
    ----------
    devices : int or jax.sharding.Mesh
        The first ``devices`` of ``jax.devices()``, or a mesh (its first axis splits the batch).
    """
    import jax
    from jax.sharding import Mesh

    if isinstance(devices, Mesh):
        return devices
    if isinstance(devices, bool) or not isinstance(devices, int | np.integer) or devices < 1:
        raise ValueError(f"devices must be a positive integer or a jax.sharding.Mesh, got {devices!r}")
    available = jax.devices()
    if devices > len(available):
        raise ValueError(
            f"devices={devices}, but JAX sees {len(available)} {available[0].platform} device(s); on a CPU, "
            f"simulate devices with XLA_FLAGS=--xla_force_host_platform_device_count={devices} set before jax "
            f"is imported")
    return Mesh(np.array(available[:devices]), (AXIS,))


def n_devices(mesh) -> int:
    """How many devices split the batch (the size of the mesh's first axis)."""
    return int(mesh.devices.shape[0])


def check_divisible(n: int, mesh) -> None:
    """A clear error when a batch of ``n`` cannot be split evenly over the mesh."""
    k = n_devices(mesh)
    if n % k:
        raise ValueError(f"a batch of {n} datapoints cannot be split evenly over {k} devices: use a batch size "
                         f"divisible by {k} (e.g. {max(k, n - n % k)})")


def sharded_mode(mesh, n_batch_inputs: int, batch_outputs=(), products: str = "eigen"):
    """PyTensor's JAX mode with a linker that jits the graph with the batch sharded over ``mesh``.

    ``batch_outputs``: indices of outputs that hold one row per datapoint (e.g. the pre-activations that
    Hessian-free's Gauss-Newton products reuse): they stay split over the devices, never gathered."""
    from pytensor.compile.mode import JAX, Mode
    from pytensor.link.jax.linker import JAXLinker

    class ShardedJAXLinker(JAXLinker):
        """JAXLinker whose jit splits the first ``n_batch_inputs`` inputs (and the ``batch_outputs``) along axis 0
        and replicates the rest."""

        def jit_compile(self, fn):
            import jax
            from jax.sharding import NamedSharding, PartitionSpec

            if self.scalar_shape_inputs:
                raise NotImplementedError("graphs with scalar shape inputs cannot be sharded")
            batch, replicated = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])), NamedSharding(mesh, PartitionSpec())
            inputs = self.fgraph.inputs
            shardings = tuple(batch if i < n_batch_inputs and inputs[i].type.ndim >= 1 else replicated
                              for i in range(len(inputs)))
            outs = tuple(batch if i in batch_outputs else replicated for i in range(len(self.fgraph.outputs)))
            self.jitted = jax.jit(fn, in_shardings=shardings, out_shardings=outs if batch_outputs else replicated,
                                  compiler_options=xla_compiler_options(products))
            return one_blas_thread_on_cpu(self.jitted, self.fgraph)

    return Mode(ShardedJAXLinker(), JAX.provided_optimizer)

