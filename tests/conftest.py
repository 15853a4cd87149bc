"""Test-wide configuration: the hypothesis profile of tests/e2e/test_properties.py (nothing else)."""

from __future__ import annotations

try:
    from hypothesis import settings
except ImportError:  # hypothesis is a dev dependency; without it the property tests skip
    pass
else:
    # No example database: it would write .hypothesis/ into the checkout, and CI starts fresh
    # anyway; print_blob makes a failure found in CI reproducible with @reproduce_failure.
    settings.register_profile("archc", database=None, deadline=None, print_blob=True)
    settings.load_profile("archc")
