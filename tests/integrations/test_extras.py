"""The integrations are optional extras: importing the package imports no framework, and a
module whose framework is missing says which extra to install. A Flask resolver that is a
coroutine function (Flask would never await it) is refused with ConfigurationError."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
from flask import Flask

from sa_patterns.errors import ConfigurationError
from sa_patterns.integrations.flask import SAPatterns

FRAMEWORKS = ("fastapi", "starlette", "litestar", "flask")


def test_the_package_and_the_asgi_middleware_import_no_framework() -> None:
    code = (
        "import sys, sa_patterns.integrations, sa_patterns.integrations.asgi; "
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "framework", "extra"), [
    ("sa_patterns.integrations.fastapi", "fastapi", "sa_patterns[fastapi]"),
    ("sa_patterns.integrations.litestar", "litestar", "sa_patterns[litestar]"),
    ("sa_patterns.integrations.flask", "flask", "sa_patterns[flask]"),
])
def test_a_missing_framework_names_its_extra(
    module: str, framework: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in list(sys.modules):
        if name == framework or name.startswith(framework + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # what an uninstalled package imports as
    with pytest.raises(ImportError, match=rf"pip install '{re.escape(extra)}'"):
        importlib.import_module(module)


def test_flask_refuses_an_async_resolver() -> None:
    async def tenant(request: object) -> int:
        return 1

    app = Flask(__name__)
    SAPatterns(app, tenant=tenant)  # type: ignore[arg-type]

    @app.get("/")
    def index() -> str:
        return "never"

    app.testing = True  # exceptions reach the test
    with pytest.raises(ConfigurationError, match="returned an awaitable"):
        app.test_client().get("/")
