"""Per-vnet CPU in vimaged: `vimage -l -v`/`-j` figures, `vimage exec` processes counted
in a cgroup v2 per vnet (or by their rusage without one), cpu.max/cpu.weight limits."""

from __future__ import annotations

import json
import os

import pytest

from vimage.cli import vimage as cli
from vimage.ctl.cgroup import cgroup2_mount, parse_max

from .conftest import until

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def _cgroup2_writable() -> str:
    """Why cgroup tests cannot run here ("" if they can)."""
    mount = cgroup2_mount()
    if mount is None:
        return "no cgroup2 hierarchy is mounted"
    if not os.access(os.path.join(mount, "cgroup.procs"), os.W_OK):
        return f"{mount} is not writable (not root, or mounted read-only)"
    return ""


def _cpu_controller() -> str:
    """Why cpu.max/cpu.weight cannot be tested here ("" if they can)."""
    reason = _cgroup2_writable()
    if reason:
        return reason
    mount = cgroup2_mount()
    assert mount is not None
    with open(os.path.join(mount, "cgroup.controllers")) as fh:
        if "cpu" not in fh.read().split():
            return (f"the cpu controller is not in {mount}/cgroup.controllers (cgroup v1 "
                    "holds it, a hybrid hierarchy)")
    return ""


def _row(vd, name: str) -> dict:
    [row] = json.loads(vd.ok("-lj", name))["vnets"]
    return row


def test_list_shows_a_busy_vnets_cpu_and_load_and_not_an_idle_ones(vimaged):
    vimaged.ok("-c", "busy")
    vimaged.ok("-c", "idle")
    vimaged.ok("busy", "ifconfig", "lo0", "inet", "127.0.0.1/8", "up")
    assert "0.0% packet loss" in vimaged.ok("busy", "ping", "-c", "5", "-i", "0.05",
                                            "127.0.0.1")
    busy, idle = _row(vimaged, "busy"), _row(vimaged, "idle")
    assert busy["units"] >= 10 and busy["cpu_loop"] > 0 and busy["cpu"] > 0
    assert idle["units"] == 0 and idle["cpu"] == 0 and idle["loadavg"] == [0, 0, 0]
    assert busy["loadavg"][0] > 0 and busy["weight"] == idle["weight"] == 100
    text = vimaged.ok("-lv", "busy")
    assert "    CPU usage: " in text and "    Load average: " in text
    assert "    CPU weight: 100\n" in text


@pytest.mark.parametrize("cgroups", ["1", "0"])
def test_an_exec_process_is_charged_to_its_vnet(place, cgroups):
    """A process burning 0.3 s of CPU under `vimage exec` shows in its vnet's figures:
    from the vnet's cgroup, or (VIMAGED_CGROUPS=0, or no cgroups) its rusage."""
    if cgroups == "1" and _cgroup2_writable():
        pytest.skip(_cgroup2_writable())
    assert place.run("daemon", "start", VIMAGED_CGROUPS=cgroups).returncode == 0
    place.ok("-c", "busy")
    place.ok("-c", "idle")
    done = place.run("exec", "busy", "--", "python3", "-c", BUSY)
    assert done.returncode == 0, done.stderr
    busy, idle = _row(place, "busy"), _row(place, "idle")
    assert busy["cpu_procs"] >= 0.25 and idle["cpu_procs"] == 0
    assert bool(busy["cgroup"]) == (cgroups == "1") and idle["cgroup"] == ""
    assert "processes 0.000 s" not in place.ok("-lv", "busy")


def test_destroying_the_vnet_removes_its_cgroup(vimaged):
    if _cgroup2_writable():
        pytest.skip(_cgroup2_writable())
    vimaged.ok("-c", "box")
    assert vimaged.run("exec", "box", "--", "true").returncode == 0
    path = _row(vimaged, "box")["cgroup"]
    assert path.endswith("/box@" + path.rsplit("@", 1)[1]) and os.path.isdir(path)
    with open(os.path.join(path, "cpu.stat")) as fh:
        assert fh.readline().startswith("usage_usec ")
    vimaged.ok("-d", "box")
    assert until(lambda: not os.path.exists(path), 10)


def test_cpu_weight_is_the_loops_share_and_read_back(vimaged):
    vimaged.ok("-c", "w")
    vimaged.ok("-m", "w", "cpu.weight=300")
    row = _row(vimaged, "w")
    assert row["weight"] == 300 and "    CPU weight: 300\n" in vimaged.ok("-lv", "w")
    status, _, err = vimaged.cli("-m", "w", "cpu.weight=0")
    assert status == 1 and "cpu.weight: 0 is out of range [1..10000]" in err
    status, _, err = vimaged.cli("-m", "w", "cpu.max=lots")
    assert status == 1 and "cpu.max: quota 'lots'" in err


def test_cpu_max_and_weight_in_the_cgroup(vimaged):
    reason = _cpu_controller()
    if reason:
        # what a user sees then: the limit is refused with the reason, not ignored
        vimaged.ok("-c", "lim")
        status, _, err = vimaged.cli("-m", "lim", "cpu.max=50000", "100000")
        assert status == 1 and ("cpu controller is not available" in err
                                or "no cgroups" in err), err
        pytest.skip(f"cpu.max cannot be applied here: {reason}")
    vimaged.ok("-c", "lim", "cpu.weight=200")
    vimaged.ok("-m", "lim", "cpu.max=50000", "100000")
    row = _row(vimaged, "lim")
    assert row["cpu_max"] == "50000 100000"
    with open(os.path.join(row["cgroup"], "cpu.weight")) as fh:
        assert fh.read().strip() == "200"
    assert "    CPU max: 50000 100000\n" in vimaged.ok("-lv", "lim")
    vimaged.ok("-m", "lim", "cpu.max=max")
    assert _row(vimaged, "lim")["cpu_max"] == "max 100000"


def test_cpu_max_words():
    assert cli.parse_params(["cpu.max=50000", "100000", "cpu.weight=5"]) == {
        "cpu.max": "50000 100000", "cpu.weight": "5"}
    assert cli.parse_params(["cpu.max=50000 20000"]) == {"cpu.max": "50000 20000"}
    assert parse_max("50000 100000") == (50000, 100000)
    assert parse_max("max") == (None, 100000)
    assert parse_max("2000/10000") == (2000, 10000)
    for bad in ("", "1 2 3", "10", "max 5", "x 100000"):
        with pytest.raises(ValueError, match=r"cpu\.max"):
            parse_max(bad)
    with pytest.raises(cli.Usage):
        cli.parse_params(["cpu.weight=5", "100000"])  # only cpu.max takes a second word


class _FakeVnet:
    def __init__(self, name: str, serial: int, parent: _FakeVnet | None = None) -> None:
        self.name, self.serial, self.alive, self.parent = name, serial, True, parent


def test_cgroup_files_written_on_a_model_hierarchy(tmp_path):
    """The cgroup code's writes, on plain files laid out as a cgroup2 mount (the machine's
    own hierarchy may lack the cpu controller: test_cpu_max_and_weight_in_the_cgroup)."""
    from vimage.ctl.cgroup import Cgroups

    mount = tmp_path
    root = mount / "vimage" / "vimaged-1-2"
    root.mkdir(parents=True)
    for directory in (mount, mount / "vimage", root):
        (directory / "cgroup.subtree_control").write_text("memory\n")
        (directory / "cgroup.procs").write_text("")
    cgroups = Cgroups.open("vimaged-1-2", mount=str(mount))
    assert cgroups.available and cgroups.root == str(root)
    base = _FakeVnet("", 0)
    parent = _FakeVnet("a", 3, base)
    vnet = _FakeVnet("a.b", 7, parent)
    path = cgroups.ensure(vnet)  # nested as the vnets are, each with a leaf of its own
    here = root / "a@3" / "b@7"
    assert path == str(here) and cgroups.path(vnet) == path
    assert cgroups.path(parent) == str(root / "a@3") and (here / "self").is_dir()
    (root / "a@3" / "cgroup.subtree_control").write_text("")
    for name in ("cpu.max", "cpu.weight"):
        (here / name).write_text("")
    (here / "self" / "cgroup.procs").write_text("")
    (here / "self" / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    assert cgroups.set_limit(vnet, "cpu.max", "50000 100000") == "50000 100000"
    # the controller is enabled from the mount down to the vnet's parent
    for directory in (mount, mount / "vimage", root, root / "a@3"):
        assert (directory / "cgroup.subtree_control").read_text() == "+cpu"
    assert cgroups.usage_ns(vnet) == 1_500_000
    cgroups.attach(vnet, 4242)
    assert (here / "self" / "cgroup.procs").read_text() == "4242"
    for name in ("cpu.max", "cpu.weight"):
        (here / name).unlink()
    for name in ("cgroup.procs", "cpu.stat"):
        (here / "self" / name).unlink()
    (root / "a@3" / "cgroup.subtree_control").unlink()
    vnet.alive = parent.alive = False
    cgroups.retire_dead()  # a thread removes them, deepest first
    assert until(lambda: not (root / "a@3").exists(), 10)
    assert cgroups.path(vnet) is None and cgroups.path(parent) is None


def test_no_cgroup2_means_rusage_accounting(tmp_path):
    from vimage.ctl.cgroup import Cgroups

    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert cgroup2_mount(str(mounts)) is None
    not_cgroupfs = Cgroups.open("vimaged-1-2", mount=str(tmp_path / "plain"))
    assert not not_cgroupfs.available and "not writable" in not_cgroupfs.reason
    cgroups = Cgroups(None, "no cgroup2 hierarchy is mounted")
    with pytest.raises(OSError, match="no cgroups for vnet processes"):
        cgroups.ensure(_FakeVnet("a", 1))


def test_a_dead_daemons_cgroups_are_pruned(tmp_path):
    from vimage.ctl.cgroup import Cgroups

    dead = tmp_path / "vimage" / "vimaged-999999999-1" / "a@2" / "self"
    dead.mkdir(parents=True)
    (tmp_path / "vimage" / "vimaged-1-9").mkdir()  # pid 1 is alive: left alone
    Cgroups.open("vimaged-5-5", mount=str(tmp_path))
    assert not (tmp_path / "vimage" / "vimaged-999999999-1").exists()
    assert (tmp_path / "vimage" / "vimaged-1-9").is_dir()
