"""The spec language: YAML read with source positions, expressions, field types, limits, the
pydantic models of what users write, and loading (a file or text -> a validated spec)."""
