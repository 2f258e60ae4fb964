"""The request-body size limit of the service (pure ASGI middleware; no dependency of its own).

Without it the HTTP stack reads and JSON-decodes a body of any size before validation can refuse
it (a 60 MB report took 2.5 s and 430 MB of the server's memory, answered with a 422), and it does
so before the bearer token is checked. :class:`BodyLimit` stands in front of the app:

* a request whose ``Content-Length`` is above ``max_bytes`` is answered ``413`` at once, before
  one byte of its body is read (with ``Expect: 100-continue`` the client never sends it);
* any other request's body (chunked, without ``Content-Length``) is read here, counting the bytes
  of each chunk: once the count passes ``max_bytes`` the service stops reading and answers
  ``413``; a body within the limit is handed to the app unchanged.

The 413 body is JSON: ``{"detail": message, "max_body_bytes": limit, "size": bytes}``, where
``size`` is the declared ``Content-Length`` or the bytes received when reading stopped (the body
is at least that large), and the message names both.

A client that sends its whole body before it reads the answer (``urllib``, hence
:class:`~mpc_balancer.client.BalancerClient`, which also asks for ``Connection: close``) would
see the connection reset under its feet, not the 413, if the server closed the connection with
the body still arriving. So, once the 413 is written, what the client still sends is read and
thrown away, never held (nginx's "lingering close"), for at most ``linger_s`` (5 s), and only
then is the response ended; a client waiting for ``100 Continue`` sends nothing and just reads
the 413. The 413 says ``Connection: close``: the connection ends with it, so a body that keeps
coming is not read past the linger, and the rest of it is never taken for the connection's next
request.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("mpc_balancer.service")

#: Seconds a refused body is still read and discarded so that the client reads the 413 (see the module doc).
LINGER_S = 5.0


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``max_bytes`` with a 413 (see the module doc).

    Parameters
    ----------
    app : ASGI application
        The application behind the limit.
    max_bytes : int
        The largest body accepted, in bytes (``[service] max_body_bytes``).
    on_reject : callable, optional
        Called with the request's path for each refused request (the service counts refused
        telemetry reports in its metrics).
    linger_s : float
        At most this many seconds the rest of a refused body is read and discarded after the 413
        is written, before the response ends (see the module doc).
    """

    def __init__(self, app, max_bytes: int, on_reject: Callable[[str], None] | None = None, linger_s: float = LINGER_S):
        if not (isinstance(max_bytes, int) and max_bytes > 0):
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not linger_s >= 0:
            raise ValueError(f"linger_s must be a number >= 0, got {linger_s!r}")
        self.app, self.max_bytes, self.on_reject, self.linger_s = app, max_bytes, on_reject, float(linger_s)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared, f"a body of {declared} bytes (its Content-Length)", True)
            return
        messages, size = [], 0
        while True:  # read the body here, counting: it is held in memory only while within the limit
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it as it would
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, size, f"a body of at least {size} bytes (sent without a "
                                   "Content-Length, counted until it passed the limit)", message.get("more_body", False))
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send: Callable[[dict], Awaitable[None]], size: int, what: str,
                      more_body: bool) -> None:
        """Answer 413 naming the limit and ``size``; then, if ``more_body``, discard the rest of the body
        for at most ``linger_s`` before ending the response."""
        path = scope.get("path", "")
        log.warning("413 for %s %s from %s: %s is over max_body_bytes %d", scope.get("method"), path,
                    (scope.get("client") or ("?",))[0], what, self.max_bytes)
        if self.on_reject is not None:
            self.on_reject(path)
        body = json.dumps({"detail": f"request body too large: {what}, over max_body_bytes = {self.max_bytes} "
                                     "([service] max_body_bytes)", "max_body_bytes": self.max_bytes, "size": size}).encode()
        await send({"type": "http.response.start", "status": 413,
                    # the connection ends with this answer: the rest of the body is never read as a next request
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if more_body:
            await self._discard(receive)
        await send({"type": "http.response.body", "body": b""})

    async def _discard(self, receive) -> None:
        """Read and drop the body's remaining chunks until it ends, the client leaves, or ``linger_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _content_length(scope) -> int | None:
    """The request's declared body size, or None when it has no (readable) Content-Length; the
    HTTP server has already refused a malformed or conflicting one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
