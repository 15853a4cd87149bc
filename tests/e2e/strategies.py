"""Hypothesis strategies for archc specs: random valid specs, and hostile mutations of them.

:func:`valid_specs` draws a spec that is valid *by construction*: it keeps its own model of
every named layer's shape (H, W, C or C) while it draws layers, so the IR's shape inference can
be checked against an independent implementation (:attr:`SpecCase.shapes`). Sizes are kept
small (inputs <= 40 px, channels <= 32) so one example builds in well under a second.

Known gaps left out on purpose (each has an explicit regression test in test_properties.py):

* a stride > 1 combined with a dilation > 1: Keras refuses it (the lead is handling it);
* a layer whose output feeds nothing (a dead branch): every branch drawn here is merged back
  (residual add, squeeze-excite multiply, concat), since keras drops dead layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import assume
from hypothesis import strategies as st

Shape = tuple[int, ...]

MAX_PX = 40
MAX_C = 32
ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish", "gelu"]
TRICKY_NAMES = [
    "x", "inputs", "tensors", "layers", "keras", "nn", "torch", "np", "values", "previous", "entry", "layer", "Entry",
    "F", "self", "build_model", "SPEC_NAME", "WIDTH", "BLOCKS", "block", "args", "source", "index", "model", "i",
    "math", "dict", "print", "super", "Add", "GlobalPool", "BatchNorm1d", "Fuzz", "fuzz", "output", "name",
]  # fmt: skip
WIDTHS = [0.25, 0.35, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.3, 1.4]


# --- the shape model (independent of archcompiler's shape inference) ----------------------------


@dataclass(frozen=True)
class Rules:
    """The spec-wide settings that shapes depend on."""

    width: float
    mode: str
    divisor: int
    min: int | None
    padding: Any

    def channels(self, filters: int) -> int:
        """alpha * filters under the rounding rule (Keras' int(); TF-slim's make_divisible)."""
        if self.mode == "truncate":
            return max(self.min or 1, int(filters * self.width))
        v, d = filters * self.width, self.divisor
        new = max(self.min or d, int(v + d / 2) // d * d)
        return new + d if new < 0.9 * v else new


def _pair(v: Any) -> tuple[int, int]:
    return (v[0], v[1]) if isinstance(v, list | tuple) else (v, v)


def _pads(padding: Any, hw: tuple[int, int], keff: tuple[int, int], stride: tuple[int, int]) -> tuple[int, ...]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for n, k, s in zip(hw, keff, stride, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding[0], list | tuple):
        return (*padding[0], *padding[1])
    return tuple(padding)


def window(shape: Shape, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> tuple[int, int] | None:
    """Output (H, W) of a sliding window, or None when it does not fit."""
    h, w = shape[0], shape[1]
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    keff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    t, b, left, r = _pads(padding, (h, w), keff, s)
    ph, pw = h + t + b, w + left + r
    if keff[0] > ph or keff[1] > pw:
        return None
    return (ph - keff[0]) // s[0] + 1, (pw - keff[1]) // s[1] + 1


def out_shape(layer: dict[str, Any], ins: list[Shape], rules: Rules) -> Shape | None:
    """The shape a concrete (``$``-free) op layer gives, or None when it is invalid here."""
    op, x = layer["op"], ins[0]
    image = len(x) == 3
    spatial = ("conv", "depthwise_conv", "avg_pool", "max_pool", "zero_pad", "global_avg_pool", "global_max_pool")
    if op in spatial and not image:
        return None
    if op == "conv":
        f = rules.channels(layer["filters"]) if layer.get("scale_width", True) else layer["filters"]
        g = layer.get("groups", 1)
        if x[2] % g or f % g:
            return None
        hw = window(
            x, layer["kernel"], layer.get("stride", 1), layer.get("padding", rules.padding), layer.get("dilation", 1)
        )
        return None if hw is None else (*hw, f)
    if op == "depthwise_conv":
        hw = window(
            x, layer["kernel"], layer.get("stride", 1), layer.get("padding", rules.padding), layer.get("dilation", 1)
        )
        return None if hw is None else (*hw, x[2] * layer.get("multiplier", 1))
    if op in ("avg_pool", "max_pool"):
        hw = window(x, layer["pool"], layer.get("stride", layer["pool"]), "valid")
        return None if hw is None else (*hw, x[2])
    if op == "zero_pad":
        t, b, left, r = _pads(layer["padding"], (0, 0), (1, 1), (1, 1))
        return (x[0] + t + b, x[1] + left + r, x[2])
    if op in ("global_avg_pool", "global_max_pool"):
        return (1, 1, x[2]) if layer.get("keepdims") else (x[2],)
    if op == "flatten":
        return (math.prod(x),)
    if op == "dense":
        if image:
            return None
        return (rules.channels(layer["units"]) if layer.get("scale_width") else layer["units"],)
    if op in ("batchnorm", "activation", "dropout", "softmax", "rescaling"):
        return x
    if op == "add":
        return x if len(ins) >= 2 and len(set(ins)) == 1 else None
    if op == "multiply":
        if len(ins) != 2:
            return None
        a, b = ins
        big, small = (a, b) if math.prod(a) >= math.prod(b) else (b, a)
        return big if a == b or (len(big) == 3 and small == (1, 1, big[2])) else None
    if op == "concat":
        if len(ins) < 2 or len({s[:-1] for s in ins}) != 1 or len({len(s) for s in ins}) != 1:
            return None
        return (*x[:-1], sum(s[-1] for s in ins))
    raise AssertionError(op)


def fits(shape: Shape | None) -> bool:
    """Small enough for a fast example."""
    if shape is None or min(shape) < 1:
        return False
    if len(shape) == 3:
        return shape[0] <= MAX_PX + 8 and shape[1] <= MAX_PX + 8 and shape[2] <= 2 * MAX_C
    return shape[0] <= 4 * MAX_C


# --- blocks: templates with parameters, expanded by the model above ------------------------------

BLOCKS: dict[str, dict[str, Any]] = {
    "sep": {
        "params": {"filters": None, "stride": 1, "kh": 3, "kw": 3, "pad": "same"},
        "layers": [
            {"op": "depthwise_conv", "kernel": ["$kh", "$kw"], "stride": "$stride", "padding": "$pad"},
            {"op": "batchnorm"},
            {"op": "activation"},
            {"op": "conv", "filters": "$filters", "kernel": 1},
            {"op": "batchnorm", "variance_update": "unbiased"},
            {"op": "activation", "kind": "relu6", "name": "sep{index}_out"},
        ],
    },
    "res": {
        "params": {"channels": None, "kernel": 3},
        "layers": [
            {"op": "conv", "filters": "$channels", "kernel": "$kernel", "padding": "same", "scale_width": False},
            {"op": "batchnorm"},
            {"op": "activation", "kind": "swish", "repeat": 2},
            {"op": "conv", "filters": "$channels", "kernel": [1, "$kernel"], "padding": "same", "scale_width": False},
            {"op": "batchnorm", "epsilon": 1.0e-5, "name": "res{index}_b"},
            {"op": "add", "inputs": ["_input", "res{index}_b"]},
            {"op": "activation", "name": "res{index}_out"},
        ],
    },
    "se": {
        "params": {"channels": None, "squeeze": 4},
        "layers": [
            {"op": "global_avg_pool", "keepdims": True},
            {"op": "conv", "filters": "$squeeze", "kernel": 1, "bias": True, "scale_width": False},
            {"op": "activation", "kind": "relu"},
            {"op": "conv", "filters": "$channels", "kernel": 1, "bias": True, "scale_width": False},
            {"op": "activation", "kind": "hard_sigmoid", "name": "se{index}_gate"},
            {"op": "multiply", "inputs": ["_input", "se{index}_gate"], "name": "se{index}_out"},
        ],
    },
    "head": {
        "params": {"units": None, "rate": 0.2},
        "layers": [
            {"op": "dropout", "rate": "$rate"},
            {"op": "dense", "units": "$units", "name": "head{index}_out"},
        ],
    },
}


def _fill(v: Any, args: dict[str, Any]) -> Any:
    if isinstance(v, str) and v.startswith("$"):
        return args[v[1:]]
    if isinstance(v, list):
        return [_fill(x, args) for x in v]
    return v


def expand_block(
    block: str, args: dict[str, Any], shape: Shape, number: int, rules: Rules, classes: int | None
) -> Shape | None:
    """The output shape of one instance of a block template, or None if invalid there."""
    t = BLOCKS[block]
    values = {**t["params"], **args}
    values = {k: classes if v == "$classes" else v for k, v in values.items()}
    named: dict[str, Shape] = {"_input": shape}
    cur = shape
    for layer in t["layers"]:
        concrete = {k: _fill(v, values) for k, v in layer.items()}
        refs = [r.replace("{index}", str(number)) for r in concrete.get("inputs", [])]
        ins = [named[r] for r in refs] if refs else [cur]
        new = out_shape(concrete, ins, rules)
        if not fits(new):
            return None
        assert new is not None
        cur = new
        if "name" in concrete:
            named[concrete["name"].replace("{index}", str(number))] = cur
    return cur


# --- drawing a spec ------------------------------------------------------------------------------


@dataclass
class SpecCase:
    """A generated spec with the shapes the independent model expects."""

    spec: dict[str, Any]
    shapes: dict[str, Shape]
    """Expected output shape of every explicitly named layer (and the input)."""
    output_shape: Shape
    text: str = ""


@dataclass
class _State:
    rules: Rules
    classes: int | None
    layers: list[dict[str, Any]] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    current: Shape = ()
    current_name: str | None = None
    blocks_used: set[str] = field(default_factory=set)
    block_number: int = 0
    count: int = 0

    tricky: list[str] = field(default_factory=list)
    """Valid names that the generated code also uses for its own variables, drawn now and then."""

    def fresh(self) -> str:
        self.count += 1
        if self.tricky and self.count % 3 == 0:
            return self.tricky.pop()
        return f"l{self.count}"

    def push(self, layer: dict[str, Any], shape: Shape, name: str | None) -> None:
        self.layers.append(layer)
        self.current, self.current_name = shape, name
        if name is not None:
            self.shapes[name] = shape


def paddings() -> st.SearchStrategy[Any]:
    """Every padding form: same, valid, an integer, [t, b, l, r] and [[t, b], [l, r]]."""
    side = st.integers(0, 2)
    return st.one_of(
        st.sampled_from(["same", "valid"]),
        st.integers(0, 2),
        st.lists(side, min_size=4, max_size=4),
        st.tuples(st.lists(side, min_size=2, max_size=2), st.lists(side, min_size=2, max_size=2)).map(list),
    )


def _maybe_pair(draw: st.DrawFn, low: int, high: int) -> Any:
    if draw(st.booleans()):
        return draw(st.integers(low, high))
    return [draw(st.integers(low, high)), draw(st.integers(low, high))]


def _is_one(v: Any) -> bool:
    return all(x == 1 for x in _pair(v))


def _filters(draw: st.DrawFn, rules: Rules, scale: bool) -> int:
    ok = [f for f in range(1, MAX_C + 1) if (rules.channels(f) if scale else f) <= MAX_C]
    return draw(st.sampled_from(ok))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _image_layer(draw: st.DrawFn, s: _State, preserve_spatial: bool) -> dict[str, Any]:
    """One op layer on an image; ``preserve_spatial``: H and W must not change (inside a branch)."""
    x = s.current
    ops = ["conv", "depthwise_conv", "batchnorm", "activation", "dropout", "rescaling", "softmax"]
    if not preserve_spatial:
        ops += [
            "conv",
            "depthwise_conv",
            "zero_pad",
            "avg_pool",
            "max_pool",
            "global_avg_pool",
            "global_max_pool",
            "flatten",
        ]
    op = draw(st.sampled_from(ops))
    layer: dict[str, Any] = {"op": op}
    if op in ("conv", "depthwise_conv"):
        layer["kernel"] = _maybe_pair(draw, 1, 5)
        if not preserve_spatial and draw(st.booleans()):
            layer["stride"] = _maybe_pair(draw, 1, 3)
        # A stride > 1 with a dilation > 1 is a known gap in keras (the lead is handling it): never drawn.
        if _is_one(layer.get("stride", 1)) and draw(st.booleans()):
            layer["dilation"] = _maybe_pair(draw, 1, 3)
        if preserve_spatial:
            layer["padding"] = "same"
        elif draw(st.booleans()):
            layer["padding"] = draw(paddings())
        if draw(st.booleans()):
            layer["bias"] = draw(st.booleans())
        if op == "conv":
            scale = draw(st.booleans())
            if not scale:
                layer["scale_width"] = False
            layer["filters"] = _filters(draw, s.rules, scale)
            f = s.rules.channels(layer["filters"]) if scale else layer["filters"]
            g = draw(st.sampled_from(_divisors(math.gcd(x[2], f))))
            if g > 1:
                layer["groups"] = g
        else:
            m = draw(st.sampled_from([m for m in (1, 2, 3) if x[2] * m <= MAX_C] or [1]))
            if m > 1 or draw(st.booleans()):
                layer["multiplier"] = m
    elif op == "batchnorm":
        if draw(st.booleans()):
            layer["epsilon"] = draw(st.sampled_from([1e-5, 1e-3, 0.01]))
        if draw(st.booleans()):
            layer["decay"] = draw(st.sampled_from([0.9, 0.99, 0.999]))
        if draw(st.booleans()):
            layer["variance_update"] = draw(st.sampled_from(["biased", "unbiased"]))
    elif op == "activation":
        if draw(st.booleans()):
            layer["kind"] = draw(st.sampled_from(ACTIVATIONS))
    elif op == "dropout":
        layer["rate"] = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    elif op == "rescaling":
        layer["scale"] = draw(st.sampled_from([1 / 127.5, 0.5, 2.0, -1.0, 1]))
        if draw(st.booleans()):
            layer["offset"] = draw(st.sampled_from([-1.0, 0.0, 0.25, 3]))
    elif op == "zero_pad":
        layer["padding"] = draw(paddings().filter(lambda p: p not in ("same", "valid")))
    elif op in ("avg_pool", "max_pool"):
        layer["pool"] = _maybe_pair(draw, 1, 3)
        if draw(st.booleans()):
            layer["stride"] = _maybe_pair(draw, 1, 3)
    elif op in ("global_avg_pool", "global_max_pool"):
        if draw(st.booleans()):
            layer["keepdims"] = draw(st.booleans())
    elif op == "flatten" and math.prod(x) > 2048:
        layer = {"op": "global_avg_pool"}
    return layer


def _vector_layer(draw: st.DrawFn, s: _State) -> dict[str, Any]:
    op = draw(st.sampled_from(["dense", "dense", "dropout", "softmax", "activation", "rescaling", "batchnorm"]))
    layer: dict[str, Any] = {"op": op}
    if op == "dense":
        if s.classes and draw(st.booleans()):
            layer["units"] = "$classes"
        else:
            scale = draw(st.booleans())
            layer["units"] = _filters(draw, s.rules, scale)
            if scale:
                layer["scale_width"] = True
        if draw(st.booleans()):
            layer["bias"] = draw(st.booleans())
    elif op == "dropout":
        layer["rate"] = draw(st.sampled_from([0.0, 0.25, 0.5]))
    elif op == "activation":
        layer["kind"] = draw(st.sampled_from(ACTIVATIONS))
    elif op == "rescaling":
        layer["scale"] = draw(st.sampled_from([0.5, 3.0]))
    return layer


def _resolved(layer: dict[str, Any], s: _State) -> dict[str, Any]:
    return {k: (s.classes if v == "$classes" else v) for k, v in layer.items()}


def _op_layer(draw: st.DrawFn, s: _State, preserve_spatial: bool = False, named: bool | None = None) -> None:
    """Draw one op layer (maybe repeated) on the current tensor and append it."""
    for _ in range(20):
        layer = _image_layer(draw, s, preserve_spatial) if len(s.current) == 3 else _vector_layer(draw, s)
        repeat = draw(st.sampled_from([1, 1, 1, 2, 3]))
        shape: Shape | None = s.current
        for _ in range(repeat):
            shape = out_shape(_resolved(layer, s), [shape], s.rules) if fits(shape) else None  # type: ignore[list-item]
        if not fits(shape) or (preserve_spatial and shape[:-1] != s.current[:-1]):  # type: ignore[index]
            continue
        assert shape is not None
        if repeat > 1:
            layer["repeat"] = repeat
        name = None
        if named if named is not None else draw(st.integers(0, 4)) > 0:
            base = s.fresh()
            name = base if repeat == 1 else f"{base}_{repeat}"
            layer["name"] = base if repeat == 1 else base + "_{index}"
        s.push(layer, shape, name)
        return
    s.push({"op": "activation"}, s.current, None)


def _anchor(draw: st.DrawFn, s: _State) -> str:
    """A name for the current tensor (adds a named identity-shaped layer if it has none)."""
    if s.current_name is None:
        layer = {"op": draw(st.sampled_from(["batchnorm", "activation", "dropout"]))}
        if layer["op"] == "dropout":
            layer["rate"] = 0.5
        layer["name"] = s.fresh()
        s.push(layer, s.current, layer["name"])
    assert s.current_name is not None
    return s.current_name


def _branch(draw: st.DrawFn, s: _State) -> None:
    """Two branches from one tensor merged again (add, multiply or concat), or squeeze-excite."""
    x_name = _anchor(draw, s)
    x = s.current
    kind = draw(st.sampled_from(["merge", "se"] if len(x) == 3 else ["merge"]))
    if kind == "se":
        pool = draw(st.sampled_from(["global_avg_pool", "global_max_pool"]))
        s.push({"op": pool, "keepdims": True}, (1, 1, x[2]), None)
        if draw(st.booleans()):
            q = draw(st.integers(1, 8))
            s.push({"op": "conv", "filters": q, "kernel": 1, "padding": "valid", "scale_width": False}, (1, 1, q), None)
            s.push({"op": "activation", "kind": "relu"}, (1, 1, q), None)
            conv = {"op": "conv", "filters": x[2], "kernel": 1, "padding": 0, "bias": True, "scale_width": False}
            s.push(conv, (1, 1, x[2]), None)
        gate = s.fresh()
        s.push(
            {"op": "activation", "kind": draw(st.sampled_from(["sigmoid", "hard_sigmoid"])), "name": gate},
            (1, 1, x[2]),
            gate,
        )
        inputs = draw(st.permutations([x_name, gate]))
        name = s.fresh()
        s.push({"op": "multiply", "inputs": inputs, "name": name}, x, name)
        return
    # branch A: from x (the previous layer)
    for _ in range(draw(st.integers(0, 2))):
        _op_layer(draw, s, preserve_spatial=True)
    a_name = _anchor(draw, s) if s.current_name != x_name or draw(st.booleans()) else x_name
    a = s.shapes[a_name]
    # branch B: reads x explicitly (or is x itself)
    b_name = x_name
    if draw(st.booleans()):
        start = len(s.layers)
        s.current, s.current_name = x, x_name
        for _ in range(draw(st.integers(1, 2))):
            _op_layer(draw, s, preserve_spatial=True)
        s.layers[start]["inputs"] = [x_name]
        b_name = _anchor(draw, s)
    b = s.shapes[b_name]
    ops = ["concat"]  # both branches keep x's spatial size, so concat always fits
    if a == b:
        ops += ["add", "multiply"]
    op = draw(st.sampled_from(ops))
    inputs = draw(st.permutations([a_name, b_name]))
    if op != "multiply" and a == b and draw(st.integers(0, 3)) == 0:
        inputs = [*inputs, a_name]  # three inputs (add and concat take any number)
    shape = out_shape({"op": op}, [s.shapes[n] for n in inputs], s.rules)
    assert shape is not None
    name = s.fresh()
    s.push({"op": op, "inputs": list(inputs), "name": name}, shape, name)


def _block_call(draw: st.DrawFn, s: _State) -> None:
    """A call of a block template (with arguments, maybe a name prefix and repeat)."""
    x = s.current
    choices = ["sep", "res", "se"] if len(x) == 3 else ["head"]
    block = draw(st.sampled_from(choices))
    args: dict[str, Any] = {}
    if block == "sep":
        args["filters"] = _filters(draw, s.rules, True)
        for p, values in (("stride", [1, 2]), ("kh", [1, 3, 5]), ("kw", [1, 3]), ("pad", ["same", "valid", 1])):
            if draw(st.booleans()):
                args[p] = draw(st.sampled_from(values))
    elif block in ("res", "se"):
        args["channels"] = x[2]
        if block == "res" and draw(st.booleans()):
            args["kernel"] = draw(st.sampled_from([1, 3]))
        if block == "se" and draw(st.booleans()):
            args["squeeze"] = draw(st.integers(1, 8))
    else:
        if s.classes and draw(st.booleans()):
            args["units"] = "$classes"
        else:
            args["units"] = draw(st.integers(1, MAX_C))
        if draw(st.booleans()):
            args["rate"] = draw(st.sampled_from([0.0, 0.5]))
    repeat = draw(st.sampled_from([1, 1, 2, 3])) if block != "head" else 1
    shape: Shape | None = x
    for r in range(repeat):
        shape = expand_block(block, args, shape, s.block_number + r + 1, s.rules, s.classes) if shape else None
    if shape is None:
        _op_layer(draw, s)
        return
    call: dict[str, Any] = {"block": block, **args}
    if repeat > 1:
        call["repeat"] = repeat
    if draw(st.integers(0, 3)) == 0:
        call["name"] = f"{block}_call{{index}}"
    s.block_number += repeat
    s.blocks_used.add(block)
    out = f"{block}{s.block_number}_out"  # every template names its last layer '<block>{index}_out'
    s.push(call, shape, out)


@st.composite
def valid_specs(draw: st.DrawFn, max_layers: int = 10) -> SpecCase:
    """A random spec, valid by construction, with the shapes an independent model expects."""
    size = draw(st.one_of(st.integers(3, MAX_PX), st.lists(st.integers(3, MAX_PX), min_size=2, max_size=2)))
    # rho scales the input; Python's round() (half to even) is the documented-by-code rule.
    rho = draw(st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.75, 0.9]))
    hw = (size, size) if isinstance(size, int) else (size[0], size[1])
    hw = (round(hw[0] * rho), round(hw[1] * rho))
    assume(min(hw) >= 1)
    channels = draw(st.integers(1, 4))
    mode = draw(st.sampled_from(["truncate", "make_divisible"]))
    rounding: dict[str, Any] = {"mode": mode}
    rmin = None
    if mode == "make_divisible":
        rounding["divisor"] = 8
    if draw(st.integers(0, 3)) == 0:
        rmin = draw(st.sampled_from([1, 4, 8]))
        rounding["min"] = rmin
    width = draw(st.sampled_from(WIDTHS))
    defaults: dict[str, Any] = {}
    padding = "same"
    if draw(st.booleans()):
        padding = draw(paddings())
        defaults["padding"] = padding
    if draw(st.booleans()):
        defaults["bias"] = draw(st.booleans())
    if draw(st.booleans()):
        defaults["activation"] = draw(st.sampled_from(ACTIVATIONS))
    if draw(st.booleans()):
        defaults["batchnorm"] = {
            "epsilon": draw(st.sampled_from([1e-5, 1e-3])),
            "decay": draw(st.sampled_from([0.9, 0.99])),
            "variance_update": draw(st.sampled_from(["biased", "unbiased"])),
        }
    classes = draw(st.one_of(st.none(), st.integers(1, 12)))
    rules = Rules(width, mode, 8, rmin, padding)
    input_name = draw(st.sampled_from(["input", "image"]))
    s = _State(rules, classes)
    s.tricky = draw(st.lists(st.sampled_from(TRICKY_NAMES), unique=True, max_size=4))
    s.current, s.current_name = (*hw, channels), input_name
    s.shapes[input_name] = s.current

    for _ in range(draw(st.integers(1, max_layers))):
        kind = draw(st.sampled_from(["op", "op", "op", "branch", "block"]))
        if kind == "op":
            _op_layer(draw, s)
        elif kind == "branch":
            _branch(draw, s)
        else:
            _block_call(draw, s)

    spec: dict[str, Any] = {"archc": 1, "name": draw(st.sampled_from(["fuzz", "fuzz", "add", "model", "nn", "x"]))}
    if draw(st.booleans()):
        spec["description"] = "a generated spec"
    spec["input"] = {"size": size, "channels": channels}
    if input_name != "input":
        spec["input"]["name"] = input_name
    if classes is not None:
        spec["classes"] = classes
    spec["width"] = width
    if rho != 1.0:
        spec["resolution"] = rho
    spec["rounding"] = rounding
    if defaults:
        spec["defaults"] = defaults
    if s.blocks_used:
        spec["blocks"] = {b: BLOCKS[b] for b in sorted(s.blocks_used)}
    spec["layers"] = s.layers
    case = SpecCase(spec, dict(s.shapes), s.current)
    case.text = dump(spec)
    return case


def dump(spec: dict[str, Any]) -> str:
    """YAML text: block style at the top, one flow mapping per layer (as specs are written)."""
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=1000)
