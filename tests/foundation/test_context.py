"""The request context: nesting, isolation across threads and tasks, session.info precedence."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from sqlalchemy.orm import Session

import sa_patterns
from sa_patterns.context import current_actor, current_tenant, is_all_tenants, require_tenant
from sa_patterns.errors import ConfigurationError, TenantRequired


def test_nested_scopes_restore_outer_value() -> None:
    assert current_tenant() is None
    with sa_patterns.tenant_scope(1):
        with sa_patterns.tenant_scope("acme"):
            assert current_tenant() == "acme"
        assert current_tenant() == 1
    assert current_tenant() is None


def test_scope_restored_after_exception() -> None:
    with pytest.raises(RuntimeError), sa_patterns.tenant_scope(7):
        raise RuntimeError("boom")
    assert current_tenant() is None


def test_threads_keep_their_own_tenant() -> None:
    seen: dict[int, object] = {}
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        with sa_patterns.tenant_scope(n):
            barrier.wait()  # all threads are inside their scope at once
            seen[n] = current_tenant()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {n: n for n in range(8)}


async def test_asyncio_tasks_keep_their_own_tenant() -> None:
    async def worker(n: int) -> object:
        with sa_patterns.tenant_scope(n), sa_patterns.actor_scope(f"user{n}"):
            await asyncio.sleep(0.001 * (8 - n))  # interleave
            return (current_tenant(), current_actor())

    results = await asyncio.gather(*(worker(n) for n in range(8)))
    assert results == [(n, f"user{n}") for n in range(8)]


def test_session_info_wins_over_scope() -> None:
    s = Session()
    s.info["tenant_id"] = 99
    s.info["actor_id"] = "bob"
    with sa_patterns.tenant_scope(1), sa_patterns.actor_scope("alice"):
        assert current_tenant(s) == 99
        assert current_actor(s) == "bob"
        assert current_tenant() == 1
    s.info["all_tenants"] = True
    assert is_all_tenants(s)
    assert not is_all_tenants()


def test_all_tenants_scope() -> None:
    assert not is_all_tenants()
    with sa_patterns.all_tenants():
        assert is_all_tenants()
    assert not is_all_tenants()


@pytest.mark.parametrize("bad", [True, 1.5, object(), b"x", "", [1]])
def test_wrong_tenant_types_are_configuration_errors(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="tenant"), sa_patterns.tenant_scope(bad):  # type: ignore[arg-type]
        pass


def test_none_tenant_scope_is_refused_with_advice() -> None:
    with pytest.raises(ConfigurationError, match="all_tenants"), sa_patterns.tenant_scope(None):  # type: ignore[arg-type]
        pass


def test_uuid_and_str_tenants_are_accepted() -> None:
    tid = uuid.uuid4()
    with sa_patterns.tenant_scope(tid):
        assert require_tenant() == tid


def test_require_tenant_fails_closed() -> None:
    with pytest.raises(TenantRequired, match="tenant_scope"):
        require_tenant()


def test_wrong_actor_type_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="actor"), sa_patterns.actor_scope(3.5):
        pass


def test_error_codes_in_messages() -> None:
    err = TenantRequired("no tenant")
    assert str(err).endswith("[sap02]")
    assert isinstance(err, sa_patterns.SAPatternsError)


@pytest.mark.parametrize("scope", ["tenant", "actor", "meta"])
def test_nul_characters_are_refused_up_front(scope: str) -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        if scope == "tenant":
            with sa_patterns.tenant_scope("a\x00b"):
                pass
        elif scope == "actor":
            with sa_patterns.actor_scope("a\x00b"):
                pass
        else:
            with sa_patterns.actor_scope("a", ip="1\x00"):
                pass
