"""docs/isolation.md is generated from the catalogue; the committed page must be current."""

from __future__ import annotations

from .report import COMMAND, PAGE, render


def test_committed_page_is_generated_from_the_catalogue() -> None:
    assert PAGE.exists(), f"{PAGE} is missing: run `{COMMAND}`"
    assert PAGE.read_text() == render(), (
        f"{PAGE.name} differs from the catalogue (a shape, a kind, a declared refusal or an "
        f"XFAIL entry changed): regenerate it with `{COMMAND}` and commit it"
    )
