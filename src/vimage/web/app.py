"""The GUI's HTTP and websocket API (FastAPI), and the guard in front of it.

Every request, HTTP or websocket, passes `Guard` first: it must come from a loopback
address, name a local Host (no DNS rebinding), come from a local Origin when it has
one, and bear the session token — as `?token=` (the printed URL), an `X-Vimage-Token`
header, or the cookie the page gets when loaded with the token. Anything else is
refused with 403 before it reaches the app.

HTTP (JSON bodies; a refused or malformed request gets `{"error": "..."}` and a 4xx):

    GET  /                      the page            GET  /static/{app.js,style.css}
    GET  /api/topology          topology, addresses, state
    PUT  /api/topology          the edited topology (the YAML structure as JSON)
    GET  /api/yaml              the topology as a YAML download
    POST /api/save              write it to the file the GUI was started with
    POST /api/up, /api/down     start / stop the experiment
    POST /api/link              {"a", "b", "params": {"delay": "20ms", ...}} (live)
    POST /api/capture/start, /api/capture/stop   {"a", "b"}
    GET  /api/capture.pcap?a=..&b=..            the capture so far, for Wireshark

Websocket /ws: the server pushes `{"type": "counters", "time", "links": [{"a", "b",
"bytes", "packets"}]}` once a second; the page sends `{"type": "cmd", "id", "node",
"line"}` and gets `{"type": "result", "id", "node", "status", "output"}` or
`{"type": "error", "id", "error"}` (so does any malformed message).

Everything that takes the session's lock (which `up` holds while it builds) runs in the
thread pool, never on the event loop. FastAPI is imported when the app is made
(`create_app`), so the rest of vimage does not need it; this module has no `from
__future__ import annotations` because FastAPI reads the handlers' annotations at runtime.
"""

import asyncio
import contextlib
import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from importlib import resources
from types import MappingProxyType
from typing import Any

from vimage.web.session import GuiError, GuiSession

TOKEN_PARAM = "token"
TOKEN_HEADER = "x-vimage-token"
TOKEN_COOKIE = "vimage_token"
LOCAL_CLIENTS = frozenset({"127.0.0.1", "::1"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STATIC_FILES = MappingProxyType({"app.js": "text/javascript", "style.css": "text/css"})
MAX_MESSAGE = 64 * 1024  # bytes of one websocket message

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _hostname(value: str) -> str:
    return (urllib.parse.urlsplit("//" + value).hostname or "").lower()


class Guard:
    """ASGI middleware: refuse what is not local or lacks the token (see the module doc)."""

    def __init__(self, app: Any, token: str, clients: Iterable[str] = LOCAL_CLIENTS) -> None:
        self.app = app
        self.token = token
        self.clients = frozenset(clients)

    def refusal(self, scope: Scope) -> str | None:
        client = scope.get("client") or ("", 0)
        if client[0] not in self.clients:
            return "only local connections are served"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        if _hostname(headers.get("host", "")) not in LOCAL_HOSTS:
            return "the Host header must name this machine"
        origin = headers.get("origin")
        origin_host = _hostname(urllib.parse.urlsplit(origin).netloc) if origin else None
        if origin is not None and origin_host not in LOCAL_HOSTS:
            return "cross-origin requests are refused"
        if not any(hmac.compare_digest(t.encode(), self.token.encode())
                   for t in _tokens(scope, headers)):
            return "missing or wrong token (use the URL vimage gui printed)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": reason})
        else:
            body = json.dumps({"error": reason}).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def _tokens(scope: Scope, headers: dict[str, str]) -> list[str]:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found = list(query.get(TOKEN_PARAM, ()))
    if TOKEN_HEADER in headers:
        found.append(headers[TOKEN_HEADER])
    cookie = SimpleCookie()
    with contextlib.suppress(Exception):
        cookie.load(headers.get("cookie", ""))
    if TOKEN_COOKIE in cookie:
        found.append(cookie[TOKEN_COOKIE].value)
    return found


def static_text(name: str) -> str:
    return resources.files("vimage.web").joinpath("static", name).read_text(encoding="utf-8")


def create_app(session: GuiSession, token: str, clients: Iterable[str] = LOCAL_CLIENTS,
               interval: float = 1.0) -> Any:
    """The ASGI app (FastAPI behind `Guard`) serving `session`; counters every `interval` s."""
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="vimage gui", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(GuiError)
    async def refused(request: Request, exc: GuiError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "malformed request"}, status_code=400)

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise GuiError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise GuiError("the request body is a JSON object")
        return data

    @app.get("/")
    def index() -> HTMLResponse:
        page = HTMLResponse(static_text("index.html"))
        page.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return page

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise GuiError(f"no static file {name!r}", 404)
        return Response(static_text(name), media_type=STATIC_FILES[name])

    @app.get("/api/topology")
    def get_topology() -> dict[str, Any]:
        return session.view()

    @app.put("/api/topology")
    async def put_topology(request: Request) -> dict[str, Any]:
        data = await body(request)
        await run_in_threadpool(session.replace, data.get("topology", data))
        return await run_in_threadpool(session.view)

    @app.get("/api/yaml")
    def get_yaml() -> Response:
        name = f"{session.topology.name}.yaml"
        return Response(session.yaml(), media_type="application/x-yaml",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.post("/api/save")
    def save() -> dict[str, Any]:
        return {"saved": session.save()}

    @app.post("/api/up")
    async def up() -> dict[str, Any]:
        await run_in_threadpool(session.up)
        return await run_in_threadpool(session.view)

    @app.post("/api/down")
    async def down() -> dict[str, Any]:
        await run_in_threadpool(session.down)
        return await run_in_threadpool(session.view)

    @app.post("/api/link")
    async def set_link(request: Request) -> dict[str, Any]:
        data = await body(request)
        params = await run_in_threadpool(session.set_link, data.get("a"), data.get("b"),
                                         data.get("params"))
        return {"params": params, "view": await run_in_threadpool(session.view)}

    @app.post("/api/capture/{action}")
    async def capture(action: str, request: Request) -> dict[str, Any]:
        data = await body(request)
        if action == "start":
            return await run_in_threadpool(session.capture_start, data.get("a"), data.get("b"))
        if action == "stop":
            return await run_in_threadpool(session.capture_stop, data.get("a"), data.get("b"))
        raise GuiError(f"no capture action {action!r} (start, stop)", 404)

    @app.get("/api/capture.pcap")
    def capture_pcap(a: str = "", b: str = "") -> Response:
        data = session.capture_pcap(a, b)
        return Response(data, media_type="application/vnd.tcpdump.pcap",
                        headers={"Content-Disposition": f'attachment; filename="{a}-{b}.pcap"'})

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        sending = asyncio.Lock()

        async def send(message: dict[str, Any]) -> None:
            async with sending:
                await socket.send_text(json.dumps(message))

        async def counters() -> None:
            while True:
                try:
                    sample = {"type": "counters", **await run_in_threadpool(session.counters)}
                except Exception as exc:  # a bug: say so on the page, keep the socket
                    sample = {"type": "error", "id": None, "error": f"counters: {exc!r}"}
                await send(sample)
                await asyncio.sleep(interval)

        async def command(ident: Any, node: Any, line: Any) -> None:
            try:
                status, output = await run_in_threadpool(session.run, node, line)
            except GuiError as exc:
                await send({"type": "error", "id": ident, "error": str(exc)})
                return
            await send({"type": "result", "id": ident, "node": node, "status": status,
                        "output": output})

        tasks = {asyncio.create_task(counters())}
        try:
            while True:
                text = await socket.receive_text()
                message, problem = _message(text)
                if problem is not None:
                    await send({"type": "error", "id": message.get("id"), "error": problem})
                    continue
                task = asyncio.create_task(
                    command(message.get("id"), message.get("node"), message.get("line")))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in tasks:
                task.cancel()

    return Guard(app, token, clients)


def _message(text: str) -> tuple[dict[str, Any], str | None]:
    """A websocket message from the page, or why it is malformed."""
    if len(text) > MAX_MESSAGE:
        return {}, f"a message has at most {MAX_MESSAGE} bytes"
    try:
        message = json.loads(text)
    except ValueError:
        return {}, "a message is a JSON object"
    if not isinstance(message, dict):
        return {}, "a message is a JSON object"
    if message.get("type") != "cmd":
        return message, f"unknown message type {message.get('type')!r} (cmd)"
    if not isinstance(message.get("node"), str) or not isinstance(message.get("line"), str):
        return message, "a cmd message has a string node and a string line"
    return message, None
