"""Instantiate a keras.Model from the IR (the kit checks it against the IR: backend.py glue).

The functional API mirrors the IR's DAG directly: each layer call reads the outputs of the
layers its description names. Layer names are the IR node names, so weights map by name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from archcompiler.backends.keras.ops import BACKEND, HANDLERS, Handler

from archcompiler.ir.graph import Graph
from archcompiler.kit.calls import describe_graph


@contextmanager
def floatx(dtype: str) -> Iterator[None]:
    """Keras' float type and global dtype policy set to ``dtype`` for the block, then restored.

    Layers and ``keras.Input`` take their dtype from these when none is passed, so the handlers'
    calls (the same literals the emitter writes) build a float64 model unchanged.
    """
    from archcompiler.backends.keras._framework import keras

    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


RECURSION_MARGIN = 200
"""Frames Keras' walk uses besides one per layer of depth (its helpers, TensorFlow's calls)."""


@contextmanager
def recursion_room(graph: Graph) -> Iterator[None]:
    """Python's recursion limit raised, for the block, to the frames in use now plus the graph's
    depth (and a margin), then restored.

    Keras' functional API walks the layer graph depth first with one Python frame per layer of
    depth (``keras.src.ops.function._build_map_helper``), when a model is made (build, the
    sub-models that expose every node for parity) and saved: a chain of 1,200 layers passed the
    default limit of 1,000. ``archc check`` bounds the depth (limits.MAX_GRAPH_DEPTH), so the
    room needed is bounded too; Python-to-Python calls take no C stack (CPython 3.11+)."""
    frames, frame = 0, sys._getframe()
    while frame is not None:
        frames, frame = frames + 1, frame.f_back
    needed = frames + graph.depth() + RECURSION_MARGIN
    old = sys.getrecursionlimit()
    if needed <= old:
        yield
        return
    sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def build_model(graph: Graph, handlers: Mapping[str, Handler] = HANDLERS, dtype: str = "float32") -> Any:
    """A keras.Model equivalent to ``graph`` (NHWC, Keras' default random init) in ``dtype``,
    built through ``handlers`` (the backend instance's table)."""
    described = describe_graph(graph, handlers, BACKEND)  # UnsupportedOpError before any layer exists
    with floatx(dtype), recursion_room(graph):
        return _build(graph, described)


def _build(graph: Graph, described: Any) -> Any:
    from archcompiler.backends.keras._framework import keras

    tensors: dict[str, Any] = {}
    inputs = []
    for item in described:
        for call in item.calls:
            layer = item.handler.instantiate(call)
            if not call.inputs:  # an input: keras.Input is a tensor already
                tensors[call.name] = layer
                inputs.append(layer)
                continue
            args = [tensors[name] for name in call.inputs]
            tensors[call.name] = layer(args[0] if len(args) == 1 else args)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = [tensors[o] for o in graph.outputs]  # a list for a multi-output model, in order
    return keras.Model(inputs=model_inputs, outputs=outputs if graph.multi_output else outputs[0], name=graph.name)
