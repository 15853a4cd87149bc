"""IR graph -> one standalone PyTorch source file (Jinja2), equivalent to what build() makes.

The constructor calls come from the same handler table as the builder (the backend instance's
``handlers``), folded into block functions and tables by archcompiler.kit.folding.fold, the one
algorithm every emitter shares; layer names are the IR node names, so the emitted module's
state_dict has exactly the keys and shapes of the built one.

Injection safety: spec-controlled strings reach the code only as ``repr()`` literals or as
names checked to be identifiers; the description, free text, is only ever a ``repr()``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path

from archcompiler.backends.torch import layers
from archcompiler.backends.torch.names import RESERVED as LAYER_NAMES_RESERVED
from archcompiler.backends.torch.ops import BACKEND, Handler, copied_classes, resolve
from torch import nn

from archcompiler import ir
from archcompiler.analysis.cost import cost
from archcompiler.files import spec_reference
from archcompiler.kit.folding import Site, fold
from archcompiler.kit.pysource import RESERVED, identifier, literal, ruff_format, template_environment
from archcompiler.kit.registry import BackendError

TEMPLATES = Path(__file__).parent / "templates"
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]{1,200}")

MODULE_NAMES = frozenset(
    {"Entry", "SPEC_NAME", "SPEC_SOURCE", "SPEC_DESCRIPTION", "WIDTH", "RESOLUTION", "INPUT_SHAPE"}
    | {c.__name__ for c in vars(layers).values() if isinstance(c, type)}
)
"""Module-level names of the emitted file that the model class must not shadow."""


def class_name(graph_name: str, taken: frozenset[str] = MODULE_NAMES) -> str:
    """``mobilenet_v1`` -> ``MobilenetV1``; ``add`` -> ``AddModel`` (Add is a layer class):
    never one of the ``taken`` module-level names (a plug-in handler's copied classes too)."""
    name = "".join(part[:1].upper() + part[1:] for part in graph_name.split("_") if part)
    if not name or name[0].isdigit():
        name = f"Model{name}"
    if name in RESERVED or name in taken or name.startswith("BLOCKS"):
        name = f"{name}Model"
    return identifier(name, "model class name")


def layer_source(site: Site) -> str:
    """One entry of a layer dict: the module, or ``(module, (names it reads))`` when it does
    not read the layer before it."""
    src = f"{site.call.cls}({', '.join(site.arguments())})"
    if site.reads is None:
        return src
    refs = site.reads
    return f"({src}, ({refs[0]},))" if len(refs) == 1 else f"({src}, ({', '.join(refs)}))"


def statement(site: Site) -> list[str]:
    """A layer of a block function with guarded layers: ``layers[name] = ...``."""
    return [f"layers[{site.name}] = {layer_source(site)}"]


def render(graph: ir.Graph, handlers: Mapping[str, Handler]) -> str:
    """The template's output, before formatting."""
    for node in graph.nodes:
        identifier(node.name, "node name")
        if node.name in LAYER_NAMES_RESERVED:  # the list check and build use (names.py)
            raise BackendError(f"node name {node.name!r} clashes with a torch.nn.Module attribute")
    inputs = graph.inputs
    if len(inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(inputs)} inputs; the torch backend supports one")
    structure = fold(graph, handlers, BACKEND)
    source = spec_reference(graph.source)  # never an absolute path (files.spec_reference)
    used = structure.classes()
    copied = copied_classes(handlers)  # layers.py's first, then the handlers' own (Handler.classes)
    unknown = [c for c in used if "." not in c and c not in copied]
    if unknown:
        raise BackendError(f"torch: no handler lists class {unknown[0]!r} in classes: emitted code cannot define it")
    class_sources = [inspect.getsource(c) for name, c in copied.items() if name in used]
    torch_cost = cost(graph, "torch")
    stats = cost(graph, "keras").non_trainable
    shape = graph.input_shape
    input_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
    convs = (
        call.name
        for node in graph.nodes
        for call in handlers[node.op].describe(node, graph)
        if issubclass(resolve(call.cls, copied), nn.modules.conv._ConvNd)
    )
    example = next(convs, None)
    empty_pads = (
        call
        for node in graph.nodes
        for call in handlers[node.op].describe_general(node, graph)
        if call.cls == "nn.ZeroPad2d" and not any(call.args[0])
    )
    text = "\n".join(class_sources) + "".join(layer_source(s) for s in structure.sites())
    context = {
        "graph_name": identifier(graph.name, "spec name"),
        "graph_name_repr": literal(graph.name),
        "source_doc": f"the spec file {source}" if _SAFE_PATH.fullmatch(source) else "a spec (see SPEC_SOURCE)",
        "source_repr": literal(source),
        "description_repr": literal(graph.description),
        "width": literal(graph.width),
        "width_repr": literal(graph.width),
        "height": int(graph.resolution[0]),
        "width_px": int(graph.resolution[1]),
        "resolution_repr": literal(tuple(int(r) for r in graph.resolution)),
        "input_shape": input_shape,
        "input_shape_repr": literal(input_shape),
        "params": f"{torch_cost.trainable:,}",
        "buffers": f"{stats:,}" if stats else "",  # none (an optimised graph): the docstring says so
        "macs": f"{torch_cost.macs:,}",
        "example_key": f"{example}.weight" if example else "<layer>.weight",
        "need_functional": "F." in text,
        "class_sources": class_sources,
        "kinds": structure.kinds,
        "sections": structure.sections,
        "layer": layer_source,
        "statement": statement,
        "dag": not structure.chain,
        "skip_empty_pads": next(empty_pads, None) is not None,
        "input_name": inputs[0].name,
        "outputs": graph.outputs,
        "multi_output": graph.multi_output,
        "class_name": class_name(graph.name, MODULE_NAMES | set(copied)),
    }
    return template_environment(TEMPLATES).get_template("module.py.j2").render(**context)


def emit_source(graph: ir.Graph, handlers: Mapping[str, Handler]) -> str:
    """Rendered, formatted source of a module defining the model class for ``graph``."""
    return ruff_format(render(graph, handlers))
