"""The framework guard of tests/conftest.py in the processes a test starts (archc, python -c ...).

While a test runs, tests/conftest.py puts this folder on PYTHONPATH and names, in
ARCHC_TEST_REFUSED, the framework modules the test is not marked for. A child process that
imported any of them says so at exit in ARCHC_TEST_GUARD_LOG (it runs as usual otherwise);
the test then fails with the marker to add. Python imports ``sitecustomize`` at start-up: the
one this folder shadows, if any, is run after this one.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import os
import sys

_REFUSED = [m for m in os.environ.get("ARCHC_TEST_REFUSED", "").split(",") if m]
_LOG = os.environ.get("ARCHC_TEST_GUARD_LOG", "")


def _report() -> None:
    loaded = [m for m in _REFUSED if m in sys.modules]
    if loaded:
        with open(_LOG, "a", encoding="utf-8") as log:
            command = " ".join(sys.orig_argv)[-160:].replace("\n", " ").replace("\t", " ")  # one line
            log.write(f"{','.join(loaded)}\t{command}\n")


if _REFUSED and _LOG:
    atexit.register(_report)

_here = os.path.dirname(os.path.abspath(__file__))
_next = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _next is not None and _next.loader is not None:
    _module = importlib.util.module_from_spec(_next)
    _next.loader.exec_module(_module)
