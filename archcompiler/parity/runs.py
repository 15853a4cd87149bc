"""What every parity run settles before anything is built: the backends in order (torch before
TensorFlow) and able to do what is asked, the float64 reference, the arguments, and whether the
tensors it will hold fit in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from archcompiler import ir, weights
from archcompiler.kit.backend import (
    DTYPES,
    BackendError,
    activation_values,
    build,
    check_memory,
    require_capabilities,
)
from archcompiler.kit.registry import BUILTIN, Backend, get_backend

if TYPE_CHECKING:
    pass


def ordered(names: Sequence[str]) -> list[str]:
    """Built-ins in registry order (PyTorch must be imported before TensorFlow in one
    process, docs/DESIGN.md pitfalls), then plug-ins as given."""
    builtin = [b for b in BUILTIN if b in names]
    return builtin + [n for n in names if n not in BUILTIN]


def resolve_backends(
    backends: Sequence[str], instances: Mapping[str, Backend] | None, dtype: str, **needs: bool
) -> tuple[list[tuple[str, Backend]], tuple[str, Backend]]:
    """The named backends in order, and the one whose float64 run is the reference (the first
    that builds in float64), after checking that every one can do what is asked (``dtype``,
    ``needs``: training, multi_output, optimize) before any is built."""
    names = ordered(list(dict.fromkeys(backends)))
    if len(names) < 2:
        raise BackendError("parity needs at least two backends")
    pairs = [(n, (instances or {}).get(n) or get_backend(n)) for n in names]
    require_capabilities([b for _, b in pairs], dtype=dtype, **needs)
    oracle = next(((n, b) for n, b in pairs if "float64" in getattr(b, "dtypes", ())), None)
    if oracle is None:
        raise BackendError(
            f"parity judges against a float64 run, and none of {', '.join(names)} builds models in float64 "
            "(add torch or keras to --backends)"
        )
    return pairs, oracle


def memory_needed(graph: ir.Graph, backends: int, batch: int, dtype: str, train_steps: int = 0) -> tuple[int, int]:
    """Bytes parity holds at least, estimated from the IR before anything runs: (what grows with
    the batch, what grows with the training steps).

    Inference keeps every node's value for the batch from each backend and from the float64
    reference, plus one framework's copy while it converts layouts; a training step holds its
    activations and their gradients (float64 for the reference). Training keeps about
    ``2 * backends + 4`` trajectories (free and synchronised runs, the float64 reference and its
    probes: :func:`train_parity`), each every parameter and the logits in float64 per step, and
    the batches with their nudged copies."""
    itemsize = 8 if dtype == "float64" else 4
    values = activation_values(graph)
    by_batch = batch * values * (backends * itemsize + 8 + 8)
    if not train_steps:
        return by_batch, 0
    from archcompiler.analysis.cost import cost

    by_batch += 2 * batch * values * 8
    params = cost(graph, "keras").params
    per_step = (2 * backends + 4) * 8 * (params + batch * graph[graph.logits].shape[-1])
    inputs = 4 * 8 * batch * activation_values(graph, [graph.inputs[0].name])
    return by_batch, train_steps * (per_step + inputs)


def check_parity_memory(graph: ir.Graph, backends: int, batch: int, dtype: str, train_steps: int = 0) -> None:
    """MemoryLimitError (kit.check_memory) naming the batch or the training steps, whichever
    takes more, when parity would hold more than the memory limit, before any backend is built."""
    by_batch, by_steps = memory_needed(graph, backends, batch, dtype, train_steps)
    what = f"parity of {graph.name!r} in {backends} backends ({dtype}, batch {batch:,}"
    what += f", {train_steps:,} training steps)" if train_steps else ")"
    if by_steps > by_batch:
        check_memory(by_batch + by_steps, what, "the training steps", "train_steps")
    check_memory(by_batch + by_steps, what, "the batch or the input size", "batch")


def check_arguments(
    *, batch: int, seed: int, dtype: str, steps: int, lr: float, atol: float | None, rtol: float | None
) -> None:
    """Every run argument checked before anything is built (a BackendError naming it)."""
    from archcompiler import arguments as A

    A.integer(batch, "batch", low=1)
    A.integer(seed, "seed", high=2**32 - 1)  # what numpy's generators take
    A.choice(dtype, "dtype", DTYPES)
    A.integer(steps, "train_steps")
    A.number(lr, "lr", low=0.0, low_open=True)
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None:
            A.number(tol, name, low=0.0)


def loaded_model(backend: Backend, graph: ir.Graph, w: weights.Weights, dtype: str) -> Any:
    model = build(backend, graph, dtype)
    backend.verify(graph, model)
    backend.set_weights(graph, model, w)
    return model
