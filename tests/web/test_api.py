"""The GUI's HTTP and websocket API (vimage.web.app) through Starlette's TestClient.

The experiment runs in a real-time kernel thread (as in `vimage gui`), so the few
commands run here are short ones (`ifconfig`, one ping over a 26 ms path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the GUI needs fastapi (pip install 'vimage[gui]')")
pytest.importorskip("httpx", reason="TestClient needs httpx")

with warnings.catch_warnings():  # starlette asks for httpx2, which it does not require yet
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from vimage.emu import yamlfmt
from vimage.web.app import create_app
from vimage.web.session import GuiSession, layout

ROOT = Path(__file__).resolve().parents[2]
ROUTING = Path(__file__).resolve().parent / "data" / "routing.yaml"  # static routes
TOKEN = "secret-token"
LOCAL = ("127.0.0.1", 50000)
BASE = "http://127.0.0.1:8000"
WS = "ws://127.0.0.1:8000/ws"


@pytest.fixture
def session(tmp_path):
    path = tmp_path / "routing.yaml"
    shutil.copy(ROUTING, path)
    gui = GuiSession.open(path)
    yield gui
    gui.close()


def client_for(session, client=LOCAL, base_url=BASE, **kwargs) -> TestClient:
    return TestClient(create_app(session, TOKEN, interval=0.05), base_url=base_url,
                      client=client, **kwargs)


@pytest.fixture
def client(session):
    with client_for(session, headers={"X-Vimage-Token": TOKEN}) as c:
        yield c


def receive_until(ws, kind: str) -> dict:
    for _ in range(200):
        message = ws.receive_json()
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


def cmd(ws, node: str, line: str, ident: int = 1) -> dict:
    ws.send_json({"type": "cmd", "id": ident, "node": node, "line": line})
    for _ in range(500):
        message = ws.receive_json()
        if message["type"] in ("result", "error") and message.get("id") == ident:
            return message
    raise AssertionError("no answer to the command")


# -- the guard ----------------------------------------------------------------------------------
def test_requests_without_the_token_are_refused(session):
    with client_for(session) as c:
        for path in ("/", "/api/topology", "/static/app.js", "/api/yaml"):
            response = c.get(path)
            assert response.status_code == 403, path
            assert "token" in response.json()["error"]
        assert c.get("/api/topology", params={"token": "wrong"}).status_code == 403
        assert c.post("/api/up").status_code == 403
        assert not session.is_up
        assert c.get("/api/topology", params={"token": TOKEN}).status_code == 200
        assert c.get("/api/topology", headers={"X-Vimage-Token": TOKEN}).status_code == 200


def test_the_page_sets_a_cookie_that_serves_the_rest(session):
    with client_for(session) as c:
        page = c.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "app.js" in page.text
        assert "httponly" in page.headers["set-cookie"].lower()
        assert c.get("/static/app.js").status_code == 200  # the cookie now carries the token
        assert c.get("/static/../session.py").status_code == 404


def test_only_local_clients_and_hosts_are_served(session):
    with client_for(session, client=("10.1.2.3", 4000)) as c:
        response = c.get("/api/topology", params={"token": TOKEN})
        assert response.status_code == 403 and "local" in response.json()["error"]
    with client_for(session, base_url="http://evil.example") as c:
        assert c.get("/api/topology", params={"token": TOKEN}).status_code == 403
    with client_for(session) as c:
        response = c.get("/api/topology", params={"token": TOKEN},
                         headers={"Origin": "http://evil.example"})
        assert response.status_code == 403


def test_websocket_needs_the_token_and_a_local_origin(session):
    with client_for(session) as c:
        with pytest.raises(WebSocketDisconnect) as refused, c.websocket_connect(WS):
            pass
        assert refused.value.code == 4403
        with pytest.raises(WebSocketDisconnect), c.websocket_connect(
                f"/ws?token={TOKEN}", headers={"Origin": "http://evil.example"}):
            pass
        with c.websocket_connect(f"{WS}?token={TOKEN}") as ws:
            assert receive_until(ws, "counters")["up"] is False


# -- malformed input ----------------------------------------------------------------------------
def test_malformed_http_bodies_get_an_error(client):
    bad = client.put("/api/topology", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"] == "the request body is not JSON"
    assert client.put("/api/topology", json=[1, 2]).status_code == 400
    topo = client.get("/api/topology").json()["topology"]
    topo["nodes"]["pc1"]["type"] = "wlan"
    wrong = client.put("/api/topology", json={"topology": topo})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "nodes.pc1.type: unknown node type 'wlan'"
    assert client.post("/api/link", json={"a": "r1", "b": "r2"}).status_code == 400
    assert client.post("/api/link", json={"a": 1, "b": "r2", "params": {}}).status_code == 400
    missing = client.post("/api/link", json={"a": "r1", "b": "r9", "params": {"delay": "1ms"}})
    assert missing.status_code == 404
    odd = client.post("/api/link", json={"a": "r1", "b": "r2", "params": {"colour": "red"}})
    assert odd.status_code == 400 and "unknown link parameter 'colour'" in odd.json()["error"]
    assert client.post("/api/link", json={"a": "r1", "b": "r2",
                                          "params": {"delay": "soon"}}).status_code == 400
    assert client.get("/api/topology").json()["topology"]["links"][1]["delay"] == "5ms"
    assert client.post("/api/capture/explode", json={"a": "r1", "b": "r2"}).status_code == 404
    assert client.delete("/api/topology").json() == {"error": "Method Not Allowed"}
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_malformed_websocket_messages_get_an_error(client):
    with client.websocket_connect(f"{WS}?token={TOKEN}") as ws:
        ws.send_text("garbage")
        assert receive_until(ws, "error")["error"] == "a message is a JSON object"
        ws.send_text(json.dumps(["cmd"]))
        assert receive_until(ws, "error")["error"] == "a message is a JSON object"
        ws.send_json({"type": "shell", "id": 7})
        error = receive_until(ws, "error")
        assert error["id"] == 7 and "unknown message type" in error["error"]
        ws.send_json({"type": "cmd", "id": 8, "node": 3, "line": None})
        assert "string node" in receive_until(ws, "error")["error"]
        ws.send_text("x" * 70_000)
        assert "at most" in receive_until(ws, "error")["error"]
        assert cmd(ws, "pc1", "ifconfig", 9)["error"] == "start the experiment first"
        assert receive_until(ws, "counters")["type"] == "counters"  # still served


# -- the console --------------------------------------------------------------------------------
def test_console_runs_only_the_vnet_tools_of_its_node(client, session, tmp_path):
    assert client.post("/api/up").json()["up"] is True
    target = tmp_path / "written.pcap"
    with client.websocket_connect(f"{WS}?token={TOKEN}") as ws:
        refused = {
            "sh -c id": "sh: not a vimage tool",
            "python -c 1": "python: not a vimage tool",
            "/bin/ls /": "/bin/ls: not a vimage tool",
            f"tcpdump -c 1 -w {target}": "tcpdump: -r and -w are not available",
            "tcpdump -nr /etc/passwd": "tcpdump: -r and -w are not available",
            "ping 'unterminated": "cannot parse the line",
        }
        for k, (line, why) in enumerate(refused.items()):
            answer = cmd(ws, "pc1", line, 100 + k)
            assert answer["type"] == "error" and answer["error"].startswith(why), line
        assert not target.exists()
        assert cmd(ws, "r9", "ifconfig", 200)["error"] == "experiment routing has no node 'r9'"
        result = cmd(ws, "pc1", "ifconfig eth0", 201)
        assert result["type"] == "result" and result["status"] == 0
        assert "inet 10.0.0.20 netmask 0xffffff00" in result["output"]
        assert "10.0.3.20" in cmd(ws, "pc2", "ifconfig eth0", 202)["output"]
        ping = cmd(ws, "pc1", "ping -c 1 10.0.3.20", 203)
        assert ping["status"] == 0 and "1 packets received" in ping["output"]
        assert cmd(ws, "pc1", "nosuch", 204)["error"].startswith("nosuch: not a vimage tool")


def test_counters_follow_the_traffic(client, session):
    client.post("/api/up")
    with client.websocket_connect(f"{WS}?token={TOKEN}") as ws:
        first = receive_until(ws, "counters")
        assert first["up"] is True and [(x["a"], x["b"]) for x in first["links"]] == [
            ("pc1", "r1"), ("r1", "r2"), ("r2", "r3"), ("r3", "pc2")]
        before = {(x["a"], x["b"]): x["packets"] for x in first["links"]}
        assert cmd(ws, "pc1", "ping -c 1 10.0.3.20")["status"] == 0
        after = {(x["a"], x["b"]): x["packets"] for x in receive_until(ws, "counters")["links"]}
        for key, packets in after.items():
            assert packets >= before[key] + 2, key  # the request and the reply, at least


# -- editing ------------------------------------------------------------------------------------
def test_edits_while_running_are_refused_but_positions_move(client, session):
    client.post("/api/up")
    topo = client.get("/api/topology").json()["topology"]
    topo["nodes"]["pc3"] = {"type": "pc"}
    refused = client.put("/api/topology", json={"topology": topo})
    assert refused.status_code == 409 and "stop the experiment" in refused.json()["error"]
    del topo["nodes"]["pc3"]
    topo["nodes"]["r2"]["position"] = [410, 260]
    assert client.put("/api/topology", json={"topology": topo}).status_code == 200
    assert session.topology.nodes["r2"].position == (410, 260)
    assert client.post("/api/up").status_code == 409
    assert client.post("/api/down").json()["up"] is False
    topo["nodes"]["pc3"] = {"type": "pc"}
    topo["links"].append({"a": "pc3", "b": "r2"})
    view = client.put("/api/topology", json={"topology": topo}).json()
    assert view["topology"]["links"][-1] == {"a": "pc3:eth0", "b": "r2:eth2"}
    assert view["topology"]["nodes"]["pc3"]["position"] is not None  # placed by the layout
    assert view["addresses"]["pc3"]["eth0"] == ["10.0.4.20/24"]


def test_link_parameters_change_live(client, session):
    client.post("/api/up")
    answer = client.post("/api/link", json={"a": "r2", "b": "r1",
                                            "params": {"delay": "50ms", "loss": ""}})
    assert answer.status_code == 200
    assert answer.json()["params"] == {"bandwidth": 10_000_000, "delay": 50_000}
    ends = session.experiment.link("r1", "r2").ends
    assert [e.pipe.delay for e in ends] == [0.05, 0.05]
    assert answer.json()["view"]["topology"]["links"][1]["delay"] == "50ms"
    client.post("/api/down")
    client.post("/api/link", json={"a": "r1", "b": "r2", "params": {"delay": "7ms"}})
    assert session.topology.link_between("r1", "r2").delay == 7000


def test_save_and_download_yaml(client, session):
    topo = client.get("/api/topology").json()["topology"]
    topo["nodes"]["pc1"]["interfaces"] = {"eth0": {"ipv4": ["10.0.0.99/24"]}}
    assert client.put("/api/topology", json={"topology": topo}).status_code == 200
    saved = client.post("/api/save").json()["saved"]
    assert saved == str(session.path)
    reread = yamlfmt.load(saved)
    assert reread.nodes["pc1"].interfaces["eth0"].ipv4 == ["10.0.0.99/24"]
    assert reread == session.topology
    download = client.get("/api/yaml")
    assert download.headers["content-disposition"] == 'attachment; filename="routing.yaml"'
    assert yamlfmt.loads(download.text) == session.topology


def test_save_without_a_file_is_refused():
    gui = GuiSession.open(None)
    with client_for(gui, headers={"X-Vimage-Token": TOKEN}) as c:
        answer = c.post("/api/save")
        assert answer.status_code == 409 and "Download" in answer.json()["error"]


def test_capture_on_a_link_downloads_a_pcap(client, session):
    assert client.post("/api/capture/start", json={"a": "r1", "b": "r2"}).status_code == 409
    client.post("/api/up")
    started = client.post("/api/capture/start", json={"a": "r2", "b": "r1"}).json()
    assert started["running"] is True and started["ifname"] == "eth1"
    assert client.post("/api/capture/start", json={"a": "r1", "b": "r2"}).status_code == 409
    assert session.run("pc1", "ping -c 1 10.0.3.20")[0] == 0
    stopped = client.post("/api/capture/stop", json={"a": "r1", "b": "r2"}).json()
    assert stopped["running"] is False and stopped["captured"] >= 2
    pcap = client.get("/api/capture.pcap", params={"a": "r1", "b": "r2"})
    assert pcap.headers["content-disposition"] == 'attachment; filename="r1-r2.pcap"'
    data = pcap.content
    assert data[:4] == bytes.fromhex("4d3cb2a1")  # nanosecond pcap, little-endian
    assert b"\x08\x00\x45" in data  # an Ethernet frame carrying IPv4
    assert client.get("/api/capture.pcap", params={"a": "r2", "b": "r3"}).status_code == 404


def test_layout_places_nodes_without_positions():
    topo = yamlfmt.loads("version: 1\nname: t\nnodes:\n" + "".join(
        f"  n{k}: {{type: pc}}\n" for k in range(20)))
    assert layout(topo) == 20
    positions = [n.position for n in topo.nodes.values()]
    assert len(set(positions)) == 20 and all(p is not None for p in positions)
    assert layout(topo) == 0


# -- vimage gui ---------------------------------------------------------------------------------
def test_vimage_gui_refuses_a_bad_file_in_one_line(tmp_path, capsys):
    from vimage.cli.vimage import main

    bad = tmp_path / "lab.yaml"
    bad.write_text("version: 1\nnodes:\n  ap: {type: wlan}\n")
    assert main(["gui", str(bad)]) == 1
    assert capsys.readouterr().err == (
        f"vimage gui: {bad}:3: nodes.ap.type: unknown node type 'wlan'\n")


def test_vimage_gui_prints_a_url_that_serves_the_page(tmp_path):
    path = tmp_path / "routing.yaml"
    shutil.copy(ROUTING, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "vimage.cli.vimage", "gui", str(path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("vimage gui: http://127.0.0.1:")
        url = line.split()[-1]
        assert "token=" in url
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"<title>vimage gui</title>" in page.read()
        bare = url.split("?")[0] + "api/topology"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bare, timeout=10)
        assert refused.value.code == 403
        proc.terminate()  # uvicorn stops on SIGTERM (and ^C); then the experiment and kernel
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
