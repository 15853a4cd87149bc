"""IR graph -> one standalone PyTorch source file (Jinja2), equivalent to what build() makes.

The constructor calls come from the same handler table as the builder (``Layer.source`` vs
``Layer.instantiate``), and layer names are the IR node names, so the emitted module's
state_dict has exactly the keys and shapes of the built one.

Injection safety: spec-controlled strings reach the code only as ``repr()`` literals or as
names checked to be identifiers; the description, free text, is only ever a ``repr()``.
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from archcompiler import ir
from archcompiler.codegen import ruff_format, template_environment, type_annotation
from archcompiler.cost import cost
from archcompiler.registry import BackendError, UnsupportedOpError

from . import layers
from .ops import BACKEND, Handler
from .structure import RESERVED, analyse

TEMPLATES = Path(__file__).parent / "templates"
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]{1,200}")


def _identifier(text: str, what: str) -> str:
    if not text.isidentifier() or keyword.iskeyword(text) or not text.isascii():
        raise BackendError(f"{what} {text!r} is not a valid Python identifier")
    return text


MODULE_NAMES = frozenset(
    {"Entry", "SPEC_NAME", "SPEC_SOURCE", "SPEC_DESCRIPTION", "WIDTH", "RESOLUTION", "INPUT_SHAPE"}
    | {c.__name__ for c in vars(layers).values() if isinstance(c, type)}
)
"""Module-level names of the emitted file that the model class must not shadow."""


def class_name(graph_name: str) -> str:
    """``mobilenet_v1`` -> ``MobilenetV1``; ``add`` -> ``AddModel`` (Add is a layer class)."""
    name = "".join(part[:1].upper() + part[1:] for part in graph_name.split("_") if part)
    if not name or name[0].isdigit():
        name = f"Model{name}"
    if name in RESERVED or name in MODULE_NAMES or name.startswith("BLOCKS"):
        name = f"{name}Model"
    return _identifier(name, "model class name")


def render(graph: ir.Graph, handlers: Mapping[str, Handler]) -> str:
    """The template's output, before formatting."""
    for node in graph.nodes:
        if node.op not in handlers:
            raise UnsupportedOpError(BACKEND, node)
        _identifier(node.name, "node name")
        if hasattr(nn.Sequential, node.name) or node.name == "wiring":  # "wiring": the emitted model's own
            raise BackendError(f"node name {node.name!r} clashes with a torch.nn.Module attribute")
    inputs = graph.inputs
    if len(inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(inputs)} inputs; the torch backend supports one")
    structure = analyse(graph, handlers)
    chain = (
        all(n.inputs == ((graph.nodes[i].name,)) for i, n in enumerate(graph.nodes[1:]))
        and graph.output == graph.nodes[-1].name
        and isinstance(graph.nodes[0], ir.Input)
    )
    class_sources = [
        inspect.getsource(c) for c in vars(layers).values() if isinstance(c, type) and c in structure.classes
    ]
    param_types = {
        kind.function: {p: type_annotation([row[j] for row in kind.rows]) for j, p in enumerate(kind.params)}
        for kind in structure.kinds
    }
    torch_cost = cost(graph, "torch")
    stats = cost(graph, "keras").non_trainable
    shape = graph.input_shape
    input_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
    example = next(iter(_state_keys(graph, handlers)), "<layer>.weight")
    text = "\n".join(class_sources) + "".join(k.layers[0][1] for k in structure.kinds)
    text += "".join(src for s in structure.sections for _, src in s.singles)
    context = {
        "graph_name": _identifier(graph.name, "spec name"),
        "graph_name_repr": repr(graph.name),
        "source_doc": f"the spec file {graph.source}"
        if _SAFE_PATH.fullmatch(graph.source or "")
        else "a spec (see SPEC_SOURCE)",
        "source_repr": repr(graph.source),
        "description_repr": repr(graph.description),
        "width": repr(graph.width),
        "width_repr": repr(graph.width),
        "height": int(graph.resolution[0]),
        "width_px": int(graph.resolution[1]),
        "resolution_repr": repr(tuple(int(r) for r in graph.resolution)),
        "input_shape": input_shape,
        "input_shape_repr": repr(input_shape),
        "params": f"{torch_cost.trainable:,}",
        "buffers": f"{stats:,}",
        "macs": f"{torch_cost.macs:,}",
        "example_key": example,
        "need_functional": "F." in text,
        "class_sources": class_sources,
        "kinds": structure.kinds,
        "param_types": param_types,
        "sections": structure.sections,
        "dag": not chain,
        "input_name": inputs[0].name,
        "output_name": graph.output,
        "class_name": class_name(graph.name),
    }
    return template_environment(TEMPLATES).get_template("module.py.j2").render(**context)


def _state_keys(graph: ir.Graph, handlers: Mapping[str, Handler]) -> list[str]:
    """A few state_dict keys, for the docstring's example."""
    keys = []
    for node in graph.nodes:
        layer = handlers[node.op].layer(node, graph)
        if layer is not None and issubclass(layer.cls, nn.modules.conv._ConvNd):
            keys.append(f"{node.name}.weight")
    return keys


def emit_source(graph: ir.Graph, handlers: Mapping[str, Handler]) -> str:
    """Rendered, formatted source of a module defining the model class for ``graph``."""
    return ruff_format(render(graph, handlers))
