"""Names a layer may not take in the torch backend: each IR node becomes an attribute of the
built ``GraphModule`` and of the generated model class, so it must not shadow what
``torch.nn.Module`` (or archc's module) already defines there.

Framework-free (this module imports nothing), so ``archc check`` can refuse such a name
before torch is loaded; a torch test checks the list still covers ``dir(nn.Module)``.
Names starting with ``_`` (``_modules``, ``_parameters``, ...) are refused by the core.
"""

from __future__ import annotations

NN_MODULE = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)
"""``torch.nn.Module``'s public attributes (torch 2.13), plus ``training`` (set per instance)."""

ARCHC_MODULE = frozenset({"graph_name", "input_name", "outputs", "steps", "forward_nodes", "wiring", "compute_dtype"})
"""Attributes of archc's built GraphModule and of the generated model class."""

RESERVED: frozenset[str] = NN_MODULE | ARCHC_MODULE
