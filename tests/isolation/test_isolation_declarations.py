"""Ways of mapping tenant rows that the wall cannot scope are refused before any statement runs
(catalogue.DECLARATIONS; listed in docs/isolation.md)."""

from __future__ import annotations

import pytest

from .catalogue import DECLARATIONS, Declaration


@pytest.mark.parametrize("declaration", DECLARATIONS.values(), ids=list(DECLARATIONS))
def test_refused_when_mappers_configure(declaration: Declaration) -> None:
    reg = declaration.declare()
    try:
        with pytest.raises(declaration.refuses, match=declaration.match):
            reg.configure()
    finally:
        reg.dispose()
