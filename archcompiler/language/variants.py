"""Named variants: a spec's ``variants:`` table resolved into a plain spec before lowering.

A variant (EfficientNet's b0..b7, MobileNetV4's conv_small..hybrid_large) is data: a width,
depth and resolution multiplier, an input size, values for the spec's ``params:`` and, for a
family whose variants differ in structure, a layer table of its own (sharing ``blocks:``).
:func:`select` applies one to the spec and names the result ``<name>_<variant>``, so that
everything after it (lowering, file stems, build folders, generated modules) sees an ordinary
spec and two variants never write the same files. :func:`check` runs when a spec is loaded,
so a bad table is an error even when no variant is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from archcompiler.language.source import Source, SpecError, did_you_mean, short_repr
from archcompiler.language.spec import Spec, Variant

__all__ = ["Selection", "check", "select"]


@dataclass(frozen=True)
class Selection:
    """Which variant was used (``""``: none) and the spec it made."""

    variant: str
    spec: Spec
    source: Source


def check(spec: Spec, source: Source) -> None:
    """The table's cross-references: the default ``variant:`` names a variant, and each
    variant's ``params:`` names a value of the top-level ``params:``."""
    if spec.variant is not None and spec.variant not in spec.variants:
        raise source.error(("variant",), unknown(spec.variant, spec))
    for name, variant in spec.variants.items():
        for key in variant.params:
            if key not in spec.params:
                known = ", ".join(spec.params) or "none"
                raise source.error(
                    ("variants", name, "params", key),
                    f"unknown param {key!r}{did_you_mean(key, spec.params)}: a variant overrides the"
                    f" top-level params: (known: {known})",
                    key=True,
                )


def unknown(name: Any, spec: Spec) -> str:
    """The message for a variant the spec does not define, suggesting the known ones."""
    if not spec.variants:
        return f"unknown variant {short_repr(name)}: the spec defines no variants"
    parts = str(name).split(",")
    if len(parts) > 1 and all(p.strip() in spec.variants for p in parts):
        hint = " (one variant here: a comma-separated list is for 'archc fit' and 'archc sweep')"
    else:
        hint = did_you_mean(str(name), spec.variants)
    return f"unknown variant {short_repr(name)}{hint}; variants: {', '.join(spec.variants)}"


def select(spec: Spec, source: Source, variant: str | None) -> Selection:
    """``spec`` with ``variant`` (default: the spec's ``variant:``, else none) applied."""
    name = spec.variant if variant is None else variant
    if name is None:
        return Selection("", spec, source)
    if not isinstance(name, str) or name not in spec.variants:
        line, col = source.locate(("variants",), key=True) if "variants" in source.data else (1, 1)
        raise SpecError(unknown(name, spec), file=source.file, line=line, col=col, path="variant")
    chosen: Variant = spec.variants[name]
    update: dict[str, Any] = {"name": f"{spec.name}_{name}", "params": {**spec.params, **chosen.params}}
    for key in ("width", "depth", "resolution"):
        if getattr(chosen, key) is not None:
            update[key] = getattr(chosen, key)
    if chosen.size is not None:
        update["input"] = spec.input.model_copy(update={"size": chosen.size})
    if chosen.layers is not None:
        update["layers"] = chosen.layers
        source = _layers_from(source, ("variants", name, "layers"))
    return Selection(name, spec.model_copy(update=update), source)


def _layers_from(source: Source, at: tuple[str, ...]) -> Source:
    """``source`` with the layer table at ``at`` in place of ``layers``: lowering's errors
    then point at the variant's layers (line and column; the path reads ``layers[i]``)."""
    data = dict(source.data)
    data["layers"] = source.data[at[0]][at[1]][at[2]]
    n = len(at)

    def moved(table: dict[Any, tuple[int, int]]) -> dict[Any, tuple[int, int]]:
        kept = {p: v for p, v in table.items() if p[:1] != ("layers",)}
        kept.update({("layers", *p[n:]): v for p, v in table.items() if p[:n] == at})
        return kept

    return replace(source, data=data, positions=moved(source.positions), key_positions=moved(source.key_positions))
