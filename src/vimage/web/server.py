"""Serve the GUI on 127.0.0.1 with uvicorn: `vimage gui [FILE] [--port P]`.

The socket is bound here (port 0: any free port) before uvicorn starts, so the URL
with its random token can be printed (and a test can learn the port). `GuiServer`
runs the server in a thread for tests and for embedding; `serve()` runs it in the
foreground until ^C, then stops the experiment and the kernel.
"""

from __future__ import annotations

import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from vimage.web.app import LOCAL_CLIENTS, create_app
from vimage.web.runtime import Runtime
from vimage.web.session import GuiSession

HOST = "127.0.0.1"


class GuiServer:
    """The GUI for `session` on HOST:`port`; `start()` in a thread, `stop()` ends it."""

    def __init__(self, session: GuiSession, port: int = 0, token: str | None = None,
                 interval: float = 1.0) -> None:
        import uvicorn

        self.session = session
        self.token = token or secrets.token_urlsafe(24)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(128)  # connections wait in the backlog until uvicorn accepts
        self.port: int = self.sock.getsockname()[1]
        app = create_app(session, self.token, LOCAL_CLIENTS, interval)
        config = uvicorn.Config(app, log_level="warning", ws="auto", lifespan="off")
        self.server = _uvicorn_server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def run(self) -> None:
        """Serve in this thread until stopped (^C in the foreground)."""
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 10.0) -> str:
        self.thread = threading.Thread(target=self.run, name="vimage-gui", daemon=True)
        self.thread.start()
        if not self.server.ready.wait(timeout):
            raise RuntimeError("the GUI server did not start")
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
            self.thread = None
        self.sock.close()
        self.session.close()


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with an event set once it listens."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.ready = threading.Event()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            self.ready.set()

    return Server


def _uvicorn_server(config: Any) -> Any:  # a class made on demand: uvicorn is optional
    return _server_class()(config)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(path: str | Path | None, port: int = 0, out: TextIO | None = None,
          runtime: Runtime | None = None) -> int:
    """`vimage gui`: serve `path` until interrupted; prints the URL first. `runtime`:
    where the experiment runs (default: in this process)."""
    out = out or sys.stdout
    session = GuiSession.open(path, runtime)
    server = GuiServer(session, port)
    print(f"vimage gui: {server.url}", file=out, flush=True)
    if session.path is not None:
        print(f"vimage gui: Save writes {session.path}", file=out, flush=True)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down on SIGTERM and ^C, then raises the signal again: make SIGTERM
        # a KeyboardInterrupt too, so both end here and the experiment is taken down
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.sock.close()
        session.close()
    return 0
