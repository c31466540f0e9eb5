"""The web GUI: `vimage gui [FILE]` (docs/gui.md).

`session.GuiSession` holds the topology, its file and the experiment (a real-time kernel
in the server's process); `app.create_app` is the FastAPI app behind a guard (loopback
clients, a local Host and Origin, the token); `server.GuiServer` / `server.serve` run it
with uvicorn. The page is `static/` (plain JS and SVG, no build step, nothing fetched
from elsewhere). FastAPI and uvicorn are the optional extra `vimage[gui]`.
"""
