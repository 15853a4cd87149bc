"""IR graph -> one standalone Keras source file (Jinja2), the same model build() makes.

Every layer constructor is rendered from the very calls the builder instantiates (the backend
instance's handler table), so the generated model has the builder's layer names, classes,
arguments and weight shapes. Repeated blocks are folded by archcompiler.kit.folding.fold, the
algorithm every emitter shares: one function per block kind, one table row per instance, so
the torch and Keras modules of one spec have the same block functions and tables. A layer
that does not read the one before it (a residual add, a squeeze-excite multiply) reads named
outputs from a ``tensors`` dict.

Injection safety: spec-controlled strings reach the code only as ``repr()`` literals or as
names checked to be ASCII identifiers (inside f-strings too); the free-text description is
only ever a ``repr()`` constant, never docstring text.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

from archcompiler.backends.keras.ops import BACKEND, HANDLERS, Handler, copied_classes

from archcompiler.analysis.cost import cost
from archcompiler.files import spec_reference
from archcompiler.ir.graph import Graph
from archcompiler.kit.calls import Call
from archcompiler.kit.folding import Site, fold
from archcompiler.kit.pysource import identifier, literal, ruff_format, template_environment
from archcompiler.kit.registry import BackendError

TEMPLATES = Path(__file__).parent / "templates"
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]{1,200}")


def constructor(call: Call, name: str, overrides: Mapping[int | str, str] | None = None) -> str:
    """Source constructing the layer, e.g. ``layers.ReLU(6.0, name="conv1_relu")``."""
    return f"{call.cls}({', '.join([*call.arguments(overrides), f'name={name}'])})"


def layer_lines(site: Site) -> list[str]:
    """``x = layers.X(...)(x)``; reading named outputs from ``tensors`` when it does not read
    the layer before it, and recording its own there when a later layer reads it by name."""
    src = constructor(site.call, site.name, site.overrides)
    if site.reads is None:
        arg = "x"
    else:
        refs = [f"tensors[{r}]" for r in site.reads]
        arg = refs[0] if len(refs) == 1 else f"[{', '.join(refs)}]"
    return [f"x = {src}({arg})", *([f"tensors[{site.name}] = x"] if site.keep else [])]


def _module_file(module: str) -> Path:
    """The source file of ``module``, found without importing it (nor Keras with it)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BackendError(f"keras: no Python source for module {module!r}, whose layer class emitted code copies")
    return Path(spec.origin)


def _class_sources(names: list[str], modules: Mapping[str, str]) -> list[str]:
    """The exact classes the builder uses (``modules``: class name -> its module), copied by
    ast, each after the module-level classes it derives from (a mixin): one implementation for
    built and generated models."""
    sources: dict[tuple[str, str], str] = {}

    def add(module: str, name: str) -> None:
        path = _module_file(module)
        text = path.read_text(encoding="utf8")
        classes = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.ClassDef)}
        if name not in classes:
            raise BackendError(f"{path}: class {name} not found")  # pragma: no cover
        node = classes[name]
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes and (module, base.id) not in sources:
                add(module, base.id)
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        sources[(module, name)] = "\n".join(text.splitlines()[start - 1 : node.end_lineno])

    for name in names:
        add(modules[name], name)
    return list(sources.values())


DEEP_GRAPH = 500
"""Depth (ir.Graph.depth) from which the generated module raises Python's recursion limit
(1,000 by default) before Keras walks the graph: one frame per layer of depth, and room for the
caller's frames (build.recursion_room does the same for the built model)."""


def _outputs(graph: Graph, last: str) -> str:
    """What ``build_model`` passes as the model's outputs: one tensor, or a list in order."""
    refs = ["x" if o == last else f"tensors[{literal(o)}]" for o in graph.outputs]
    return f"[{', '.join(refs)}]" if graph.multi_output else refs[0]


def render(graph: Graph, handlers: Mapping[str, Handler] = HANDLERS) -> str:
    """The template's output, before formatting."""
    identifier(graph.name, "spec name")
    if len(graph.inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(graph.inputs)} inputs; generated Keras code supports one")
    structure = fold(graph, handlers, BACKEND)  # UnsupportedOpError for what Keras cannot express
    source = spec_reference(graph.source)  # never an absolute path (files.spec_reference)
    copied = copied_classes(handlers)
    unknown = [c for c in structure.classes() if "." not in c and c not in copied]
    if unknown:
        raise BackendError(f"keras: no handler lists class {unknown[0]!r} in classes: emitted code cannot define it")
    for call in [*structure.inputs, *(s.call for s in structure.sites())]:
        identifier(call.name, "layer name")
    keras_cost, paper = cost(graph, "keras"), cost(graph, "paper")
    last = graph.nodes[-1].name
    depth = graph.depth()
    context = {
        "depth": f"{depth:,}",
        "recursion_limit": depth + 1000 if depth >= DEEP_GRAPH else None,
        "graph_name": graph.name,
        "source_doc": f"the spec file {source}" if _SAFE_PATH.fullmatch(source) else "a spec (see SPEC_SOURCE)",
        "constants": [
            ("SPEC_NAME", literal(graph.name)),
            ("SPEC_SOURCE", literal(source)),
            ("SPEC_DESCRIPTION", literal(graph.description)),
            ("WIDTH", literal(graph.width)),
            ("RESOLUTION", literal(tuple(int(r) for r in graph.resolution))),
        ],
        "width": literal(float(graph.width)),
        "height": int(graph.resolution[0]),
        "width_px": int(graph.resolution[1]),
        "input_shape": ", ".join(str(int(d)) for d in graph.input_shape),
        "params": f"{keras_cost.params:,}",
        "trainable": f"{keras_cost.trainable:,}",
        "non_trainable": f"{keras_cost.non_trainable:,}",
        "macs": f"{paper.macs:,}",
        "custom_classes": _class_sources([c for c in copied if c in structure.classes()], copied),
        "kinds": structure.kinds,
        "sections": structure.sections,
        "lines": layer_lines,
        "chain": structure.chain,
        "input_line": constructor(structure.inputs[0], literal(structure.inputs[0].name)),
        "input_repr": literal(structure.inputs[0].name),
        "output": _outputs(graph, last),
    }
    return template_environment(TEMPLATES).get_template("module.py.j2").render(**context)


def emit_module(graph: Graph, handlers: Mapping[str, Handler] = HANDLERS) -> str:
    """Formatted source of a module whose ``build_model()`` returns the model for ``graph``."""
    return ruff_format(render(graph, handlers))
