"""Delegated administration: a process inside vnet X configures X and manages X's children,
and every way out of X's subtree gets a one-line permission (or not-found) error."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from vimage.ctl.client import daemon_pid

from .conftest import names

FORGERY = textwrap.dedent("""
    import json
    from vimage.ctl import protocol
    from vimage.ctl.client import open_client

    c = open_client()
    results = {"hello": c.info}
    attempts = {
        "list_scope": {"op": "list", "scope": ""},
        "tool_scope": {"op": "tool", "vnet": "", "argv": ["ifconfig", "-l"], "scope": "",
                       "uid": 0},
        "tool_dotdot": {"op": "tool", "vnet": "..", "argv": ["ifconfig", "-l"]},
        "tool_sibling": {"op": "tool", "vnet": "Y", "argv": ["ifconfig", "-l"]},
        "tool_absolute": {"op": "tool", "vnet": "X", "argv": ["ifconfig", "-l"]},
        "exec_up": {"op": "exec", "vnet": "../Y"},
        "destroy_self": {"op": "destroy", "name": ""},
        "modify_self": {"op": "modify", "name": "", "params": {"children.max": "9999"}},
        "hello_scope": {"op": "hello", "version": 1, "vnet": ""},
        "stop": {"op": "stop"},
        "list_base": {"op": "list", "name": "0"},
        "create_up": {"op": "create", "name": "..x"},
    }
    for key, fields in attempts.items():
        op = fields.pop("op")
        try:
            results[key] = {"ok": c.request(op, **fields)}
        except protocol.CtlError as exc:
            results[key] = {"code": exc.code, "message": exc.message}
    results["status"] = c.request("status")
    results["list"] = c.request("list", recursive=True)
    print(json.dumps(results))
""")

ATTEMPTS = [
    # (shell command run inside X, expected status, expected one-line error or output)
    ("vimage -l | cut -d' ' -f1", 0, "Name\nchild\n"),
    ("vimage -lr | cut -d' ' -f1", 0, "Name\nchild\nchild.grand\n"),
    ("vimage -l Y", 1, "vimage: vnet Y does not exist\n"),
    ("vimage -l X", 1, "vimage: vnet X does not exist\n"),
    ("vimage -d Y", 1, "vimage: vnet Y does not exist\n"),
    ("vimage -d X", 1, "vimage: vnet X does not exist\n"),
    ("vimage -d X.child", 1, "vimage: vnet X.child does not exist\n"),
    ("vimage -d 0", 1, "vimage: vnet 0 does not exist\n"),
    ("vimage -d vnet0", 1, "vimage: vnet vnet0 does not exist\n"),
    ("vimage -d ..", 1, "vimage: bad vnet name '..'"),
    ("vimage -d ../Y", 1, "vimage: bad vnet name '../Y'"),
    ("vimage -d /Y", 1, "vimage: bad vnet name '/Y'"),
    ("vimage -d .Y", 1, "vimage: bad vnet name '.Y'"),
    ("vimage -c ../evil", 1, "vimage: bad vnet name '../evil'"),
    ("vimage Y ifconfig -l", 1, "vimage: vnet Y does not exist\n"),
    ("vimage Y.child ifconfig -l", 1, "vimage: vnet Y.child does not exist\n"),
    ("vimage exec Y true", 1, "vimage: vnet Y does not exist\n"),
    ("vimage -i Y epair0a", 1, "vimage: vnet Y does not exist\n"),
    ("vimage -m X children.max=100", 1, "vimage: vnet X does not exist\n"),
    ("ifconfig epair0a vnet Y", 77, "vimage: ifconfig: vnet Y is outside this vnet's subtree\n"),
    ("ifconfig epair0a vnet 0", 77, "vimage: ifconfig: vnet 0 is outside this vnet's subtree\n"),
    ("ifconfig epair0a vnet vnet0", 77, "vimage: ifconfig: vnet vnet0 is outside"),
    ("ifconfig epair0b -vnet Y", 77, "vimage: ifconfig: vnet Y is outside this vnet's subtree\n"),
    ("ifconfig epair1b -vnet 0", 77, "vimage: ifconfig: vnet 0 is outside this vnet's subtree\n"),
    ("ifconfig epair1a destroy", 77, "vimage: ifconfig: epair1a (or its peer) belongs to a vnet"),
    ("ifconfig epair0a destroy", 77, "vimage: ifconfig: epair0a (or its peer) belongs to a vnet"),
    ("ifconfig tap create", 77, "vimage: ifconfig: tap interfaces reach the host's network"),
    ("fault impair -b epair0a delay 5ms", 77,
     "vimage: fault: the peer of epair0a is outside this vnet's subtree\n"),
    ("fault crash Y", 1, "fault: no such vnet: Y\n"),
    ("vimage daemon stop", 77, "vimage: stop: not allowed on a channel scoped to vnet X\n"),
    ("vimage --socket /nonexistent/ctl.sock -l", 1, "vimage: no daemon is listening on"),
    ("VIMAGE_CTL_FD=99 vimage -l", 1, "vimage: VIMAGE_CTL_FD=99 is not an open descriptor"),
]


@pytest.fixture
def world(vimaged):
    """X (children.max=3) with X.child and X.child.grand; Y with Y.child; epair0 joins X
    and Y; epair1 has its a end in X and its b end in the base vnet."""
    vd = vimaged
    for name in ("X", "X.child", "X.child.grand", "Y", "Y.child"):
        vd.ok("-c", name)
    vd.ok("-m", "X", "children.max=3")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("-i", "X", "epair0a")
    vd.ok("-i", "Y", "epair0b")
    vd.ok("-i", "X", "epair1a")
    return vd


def inside(vd, vnet: str, script: str, **env: str):
    return vd.run("exec", vnet, "--", "sh", "-c", script, **env)


def test_escape_attempts_fail_with_one_line(world):
    marker = "@@@"
    script = "".join(f"echo {marker}; {cmd} 2>&1; echo {marker}$?\n" for cmd, _, _ in ATTEMPTS)
    done = inside(world, "X", script, VIMAGE_AUTOSTART="0")
    chunks = done.stdout.split(marker + "\n")[1:]
    assert len(chunks) == len(ATTEMPTS), done.stdout
    for (cmd, status, expected), chunk in zip(ATTEMPTS, chunks, strict=True):
        output, _, code = chunk.rpartition(marker)
        assert int(code) == status, (cmd, chunk)
        assert output.startswith(expected), (cmd, output)
        if status:
            assert output.count("\n") == 1, (cmd, output)
    # nothing moved, nothing died
    assert names(world.ok("-lr")) == ["X", "X.child", "X.child.grand", "Y", "Y.child"]
    assert world.ok("X", "ifconfig", "-l") == "lo0 epair0a epair1a\n"
    assert world.ok("Y", "ifconfig", "-l") == "lo0 epair0b\n"
    assert world.ok("ifconfig", "-l") == "lo0 epair1b\n"
    assert world.run("daemon", "status").returncode == 0


def test_forged_requests_on_the_channel_are_refused(world, tmp_path):
    helper = tmp_path / "forge.py"
    helper.write_text(FORGERY)
    done = world.run("exec", "X", "--", sys.executable, str(helper))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["hello"]["vnet"] == "X" and got["hello"]["scoped"] is True
    for key in ("list_scope", "tool_scope", "hello_scope"):
        assert got[key]["code"] == "bad-request" and "unknown field" in got[key]["message"]
    for key in ("tool_dotdot", "exec_up", "create_up"):
        assert got[key]["code"] == "bad-request" and "bad vnet name" in got[key]["message"]
    for key in ("tool_sibling", "tool_absolute", "list_base"):
        assert got[key]["code"] == "not-found"
    for key in ("destroy_self", "modify_self", "stop"):
        assert got[key]["code"] == "permission", key
    assert got["status"]["vnet"] == "X" and "socket" not in got["status"]
    assert got["status"]["vnets"] == 2
    assert [row["name"] for row in got["list"]["vnets"]] == ["child", "child.grand"]
    assert names(world.ok("-lr")) == ["X", "X.child", "X.child.grand", "Y", "Y.child"]
    assert daemon_pid(world.paths) is not None


def test_inside_x_everything_about_x_and_its_children_works(world):
    script = "\n".join([
        "set -e",
        "ifconfig epair0a 10.0.0.1/24 up",
        "sysctl net.inet.ip.forwarding=1",
        "route add 10.9.0.0/16 10.0.0.2",
        "vimage -c c2",
        "vimage c2 ifconfig -l",
        "vimage -d c2",
        "ifconfig epair1a vnet child",
        "vimage child ifconfig -l",
        "ifconfig epair1a -vnet child",
        "ifconfig epair create",
        "ifconfig epair2a destroy",
        "vimage -m child host.hostname=kid",
        "vimage -lv child | grep Hostname",
        "vimage child sh -c 'echo $VIMAGE; vimage -l | cut -d\" \" -f1'",
        "hosts add 10.0.0.9 srv && hosts lookup srv",
        "fault impair epair0a delay 5ms && fault impair epair0a clear",
    ])
    done = inside(world, "X", script)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.splitlines() == [
        "net.inet.ip.forwarding: 0 -> 1", "add net 10.9.0.0: gateway 10.0.0.2", "lo0",
        "lo0 epair1a", "epair2a", "    Hostname: kid", "X.child", "Name", "grand", "10.0.0.9"]
    assert world.ok("X", "sysctl", "-n", "net.inet.ip.forwarding") == "1\n"
    assert world.ok("Y", "sysctl", "-n", "net.inet.ip.forwarding") == "0\n"
    assert world.ok("sysctl", "-n", "net.inet.ip.forwarding") == "0\n"
    assert world.ok("X", "ifconfig", "-l") == "lo0 epair0a epair1a\n"


def test_children_max_bounds_what_a_vnet_may_create(world):
    # X has children.max=3 and already two descendants (child, child.grand)
    done = inside(world, "X", "vimage -c c2 && vimage -c c3; echo rc=$?")
    assert done.stdout == "rc=77\n"
    assert done.stderr == "vimage: children.max (3) of this vnet reached\n"
    # limits of enclosing vnets count too, and their names stay hidden
    world.ok("-m", "X.child", "children.max=50")
    done = inside(world, "X.child", "vimage -c more; echo rc=$?")
    assert done.stdout == "rc=77\n"
    assert done.stderr == "vimage: children.max (3) of an enclosing vnet reached\n"
    assert names(world.ok("-lr", "X")) == ["X", "X.c2", "X.child", "X.child.grand"]
    world.ok("-c", "X.c3")  # the host is not bound by it
