"""The project's tests use the same pytest plugin users get (sa_patterns.testing.plugin, loaded
through its pytest11 entry point). Fixtures shared by several test packages live here."""

from __future__ import annotations
