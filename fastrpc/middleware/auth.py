"""Token authentication: a middleware pair.

Usage::

    from fastrpc.middleware.auth import BearerToken, StaticTokens, TokenAuth

    tokens = StaticTokens({"s3cret-1": {"reader"}, "s3cret-2": {"reader", "admin"}})
    server = fastrpc.Server(middleware=[TokenAuth(tokens, rules={"Admin.*": {"admin"}})])
    client = fastrpc.Client(address, middleware=[BearerToken("s3cret-2")])

The client side (:class:`BearerToken`) puts ``authorization: Bearer
<token>`` in every call's metadata (the token may come from a function,
called per call, for tokens that are refreshed).  The server side
(:class:`TokenAuth`) reads it and:

* answers UNAUTHENTICATED when it is missing, malformed, unknown or
  expired (the verifier says which; never the token itself);
* asks the verifier who the token belongs to (the *principal*: any object),
  and keeps it in ``call.state["principal"]`` for the handler
  (``fastrpc.current_call().state["principal"]``);
* answers PERMISSION_DENIED when a rule for the method (a glob:
  ``"Admin.*"``) names roles the principal does not have;
* lets through, without a token, the methods listed as public (by default
  the built-in health and reflection services).

A verifier is ``verify(token) -> principal`` (None: not a valid token; or
it raises :class:`~fastrpc.Unauthenticated` with its own message, e.g.
"token expired"), sync or ``async def`` (an async verifier makes the
middleware async: its calls run as tasks).  :class:`StaticTokens` is a
verifier over a fixed map, compared in constant time.

Tokens are never logged or put in errors: the messages say what was wrong,
not with what.
"""

from __future__ import annotations

import fnmatch
import hmac
import time
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..errors import PermissionDenied, Unauthenticated
from . import is_async_callable

__all__ = ["BearerToken", "StaticTokens", "TokenAuth", "roles_of"]

#: the metadata key the token travels under
HEADER = "authorization"
_SCHEME = "Bearer "
#: methods served without a token unless told otherwise
DEFAULT_PUBLIC = ("fastrpc.Health.*", "fastrpc.Reflection.*")


class BearerToken:
    """Client middleware: send ``authorization: Bearer <token>``.

    Parameters:
        token: the token, or a function returning it (called per call: a
            token source that refreshes itself).
    """

    def __init__(self, token: Union[str, Callable[[], str]]) -> None:
        if not callable(token) and (not isinstance(token, str) or not token):
            raise TypeError("token must be a non-empty str or a function returning one")
        self._token = token

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        token = self._token() if callable(self._token) else self._token
        call.metadata[HEADER] = _SCHEME + token
        return call_next(call)

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"


class StaticTokens:
    """A verifier over a fixed map of tokens to principals, compared in
    constant time (every known token is compared, with
    :func:`hmac.compare_digest`, whatever matches).

    Parameters:
        tokens: ``{token: principal}``; a principal is anything (a user
            name, a set of roles, an object with ``roles``).
        expires: ``{token: time.time() after which it is refused}``.
        clock: the clock ``expires`` is read against.
    """

    def __init__(self, tokens: Mapping[str, Any], expires: Optional[Mapping[str, float]] = None, clock: Callable[[], float] = time.time) -> None:
        self._tokens: Tuple[Tuple[bytes, Any, Optional[float]], ...] = tuple(
            (t.encode(), p, (expires or {}).get(t)) for t, p in tokens.items()
        )
        self._clock = clock

    def __call__(self, token: str) -> Any:
        presented = token.encode()
        found: Any = None
        expiry: Optional[float] = None
        matched = False
        for known, principal, expires in self._tokens:
            if hmac.compare_digest(presented, known):  # no early exit: the time does not say which
                matched, found, expiry = True, principal, expires
        if not matched:
            return None
        if expiry is not None and self._clock() >= expiry:
            raise Unauthenticated("token expired")
        return found

    def __repr__(self) -> str:
        return f"StaticTokens(<{len(self._tokens)} tokens>)"


def roles_of(principal: Any) -> Collection[str]:
    """The roles a principal has: itself if a set, list or tuple of names;
    its ``roles`` attribute if it has one; ``{principal}`` for a string."""
    if isinstance(principal, (set, frozenset, list, tuple)):
        return principal
    roles = getattr(principal, "roles", None)
    if roles is not None:
        return roles
    if isinstance(principal, str):
        return {principal}
    return ()


class _TokenAuthBase:
    def __init__(
        self,
        verify: Callable[[str], Any],
        *,
        rules: Optional[Mapping[str, Collection[str]]] = None,
        public: Sequence[str] = DEFAULT_PUBLIC,
        roles: Callable[[Any], Collection[str]] = roles_of,
    ) -> None:
        if not callable(verify):
            raise TypeError("verify must be callable as verify(token) -> principal")
        self._verify = verify
        self._rules = [(pattern, frozenset(required)) for pattern, required in (rules or {}).items()]
        self._public = tuple(public)
        self._roles = roles
        #: per method name: (public, required roles or None), worked out once
        self._plan: Dict[str, Tuple[bool, Optional[frozenset]]] = {}

    def _plan_for(self, method: str) -> Tuple[bool, Optional[frozenset]]:
        plan = self._plan.get(method)
        if plan is None:
            public = any(fnmatch.fnmatchcase(method, p) for p in self._public)
            required = None
            for pattern, roles in self._rules:
                if fnmatch.fnmatchcase(method, pattern):
                    required = roles if required is None else required | roles
            plan = (public, required)
            if len(self._plan) < 10_000:  # unknown method names do not grow it without bound
                self._plan[method] = plan
        return plan

    @staticmethod
    def _token(call: Any) -> str:
        value = call.metadata.get(HEADER)
        if value is None:
            raise Unauthenticated("missing bearer token")
        if not isinstance(value, str) or not value.startswith(_SCHEME) or len(value) == len(_SCHEME):
            raise Unauthenticated("malformed authorization metadata (expected 'Bearer <token>')")
        return value[len(_SCHEME):]

    def _admit(self, call: Any, principal: Any, required: Optional[frozenset]) -> None:
        if principal is None:
            raise Unauthenticated("invalid token")
        if required is not None and not required.intersection(self._roles(principal)):
            raise PermissionDenied(f"{call.method} needs one of the roles {sorted(required)}")
        call.state["principal"] = principal

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rules={dict(self._rules)!r}, public={self._public!r})"


class TokenAuth(_TokenAuthBase):
    """Server middleware: check the bearer token of every call (see the
    module's documentation).

    Parameters:
        verify: ``verify(token) -> principal or None`` (sync or async).
        rules: ``{method glob: roles}``: a call to a matching method needs
            a principal with one of those roles (several matching rules:
            any of their roles).
        public: method globs served without a token.
        roles: how to read a principal's roles (default :func:`roles_of`).
    """

    def __new__(cls, verify: Callable[[str], Any], **kw: Any) -> "TokenAuth":
        if cls is TokenAuth and is_async_callable(verify):
            return super().__new__(_AsyncTokenAuth)  # type: ignore[return-value]
        return super().__new__(cls)

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        public, required = self._plan_for(call.method)
        if public:
            return call_next(call)
        self._admit(call, self._verify(self._token(call)), required)
        return call_next(call)


class _AsyncTokenAuth(TokenAuth):
    """TokenAuth with an ``async def`` verifier."""

    async def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:  # type: ignore[override]
        public, required = self._plan_for(call.method)
        if not public:
            self._admit(call, await self._verify(self._token(call)), required)
        return await call_next(call)
