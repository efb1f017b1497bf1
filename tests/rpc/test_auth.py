"""Token authentication: the client adds the token, the server checks it
(missing, malformed, unknown, expired: UNAUTHENTICATED; a rule's roles:
PERMISSION_DENIED), the principal reaches the handler, public methods need
none, an async verifier, and the token never shows in errors or logs."""

from __future__ import annotations

import logging
import time
from typing import Any, List

import pytest

import fastrpc
from fastrpc.middleware.access import AccessLog
from fastrpc.middleware.auth import BearerToken, StaticTokens, TokenAuth, roles_of

from rpc_support import Arith

SECRET = "tok-9f3c2a77e1"
ADMIN = "tok-admin-51be"
OLD = "tok-expired-0042"


class Svc(Arith):
    def whoami(self) -> Any:
        return sorted(fastrpc.current_call().state["principal"])


class Admin:
    def reset(self) -> str:
        return "reset"


def _server(**options: Any) -> fastrpc.Server:
    verify = StaticTokens(
        {SECRET: {"reader"}, ADMIN: {"reader", "admin"}, OLD: {"reader"}},
        expires={OLD: time.time() - 1},
    )
    server = fastrpc.Server(middleware=[TokenAuth(verify, rules={"Admin.*": {"admin"}})], **options)
    server.register(Svc(), "Svc")
    server.register(Admin())
    return server


ALL = pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)


@ALL
def test_token_admits_and_rules_decide(run, client_kind):
    async def main():
        server = _server()
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with client_kind.client(address, middleware=[BearerToken(SECRET)]) as c:
                assert await c.call("Svc.add", 1, 2) == 3
                assert await c.call("Svc.whoami") == ["reader"]
                with pytest.raises(fastrpc.PermissionDenied, match="admin"):
                    await c.call("Admin.reset")
                assert await c.call("fastrpc.Health.check") == "SERVING"  # public
            async with client_kind.client(address, middleware=[BearerToken(lambda: ADMIN)]) as c:
                assert await c.call("Admin.reset") == "reset"
                assert await c.call("Svc.whoami") == ["admin", "reader"]
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_missing_malformed_unknown_and_expired_tokens(run, client_kind):
    async def main():
        server = _server(debug=True)
        address = await server.start("tcp://127.0.0.1:0")
        errors: List[BaseException] = []
        try:
            async with client_kind.client(address) as c:
                with pytest.raises(fastrpc.Unauthenticated, match="missing") as info:
                    await c.call("Svc.add", 1, 2)
                errors.append(info.value)
                with pytest.raises(fastrpc.Unauthenticated, match="malformed") as info:
                    await c.call("Svc.add", 1, 2, metadata={"authorization": "Basic " + SECRET})
                errors.append(info.value)
            for token, message in (("tok-wrong-0000000", "invalid token"), (OLD, "token expired")):
                async with client_kind.client(address, middleware=[BearerToken(token)]) as c:
                    with pytest.raises(fastrpc.Unauthenticated, match=message) as info:
                        await c.call("Svc.add", 1, 2)
                    errors.append(info.value)
                    assert await c.call("fastrpc.Health.check") == "SERVING"
        finally:
            await server.shutdown()
        for err in errors:  # what was wrong, never with what
            text = repr(err) + repr(err.details)
            assert SECRET not in text and OLD not in text and "tok-wrong" not in text

    run(main())


def test_async_verifier_and_principal_objects(run):
    class User:
        def __init__(self, name: str, roles: set) -> None:
            self.name, self.roles = name, roles

    seen = []

    async def verify(token: str) -> Any:
        seen.append(len(token))
        return User("ada", {"admin"}) if token == ADMIN else None

    async def main():
        auth = TokenAuth(verify, rules={"Admin.*": {"admin"}}, public=())
        server = fastrpc.Server(middleware=[auth])
        server.register(Admin())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address, middleware=[BearerToken(ADMIN)]) as c:
                assert await c.call("Admin.reset") == "reset"
            async with fastrpc.AsyncClient(address, middleware=[BearerToken(SECRET)]) as c:
                with pytest.raises(fastrpc.Unauthenticated):
                    await c.call("Admin.reset")
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.Unauthenticated):  # public=(): health needs a token too
                    await c.call("fastrpc.Health.check")
        finally:
            await server.shutdown()

    run(main())
    assert seen == [len(ADMIN), len(SECRET)]


def test_tokens_stay_out_of_logs(run, caplog):
    caplog.set_level(logging.DEBUG, logger="fastrpc")

    async def main():
        server = _server(access_log=True, debug=True)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            for token in (SECRET, "tok-wrong-0000000"):
                async with fastrpc.AsyncClient(address, middleware=[BearerToken(token), AccessLog()]) as c:
                    try:
                        await c.call("Svc.add", 1, 2)
                    except fastrpc.Unauthenticated:
                        pass
        finally:
            await server.shutdown()

    run(main())
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "Svc.add" in text
    assert SECRET not in text and "tok-wrong" not in text


def test_static_tokens_and_roles():
    v = StaticTokens({"a": "alice", "b": {"x"}}, expires={"b": 100.0}, clock=lambda: 50.0)
    assert v("a") == "alice" and v("b") == {"x"} and v("c") is None and v("") is None
    late = StaticTokens({"b": {"x"}}, expires={"b": 100.0}, clock=lambda: 100.0)
    with pytest.raises(fastrpc.Unauthenticated, match="expired"):
        late("b")
    assert roles_of({"r"}) == {"r"} and roles_of("r") == {"r"} and roles_of(object()) == ()
    with pytest.raises(TypeError):
        BearerToken("")
    with pytest.raises(TypeError):
        TokenAuth("not callable")  # type: ignore[arg-type]
    assert "a-secret" not in repr(BearerToken("a-secret")) and "alice" not in repr(v)
