"""Alembic operations that adopt a pattern on a live, populated table (issue 24)."""

from __future__ import annotations
