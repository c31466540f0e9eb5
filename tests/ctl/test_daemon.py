"""vimaged's life: start, status, stop, auto-start (also racing), and a daemon that is gone."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

from vimage.ctl.client import daemon_pid

from .conftest import daemon_processes, names, until, wait_gone


def test_start_status_stop(place):
    assert place.run("daemon", "status").returncode == 1
    started = subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "daemon", "start"],
                             env=place.env(), capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    pid = daemon_pid(place.paths)
    assert started.stdout == f"vimaged started as pid {pid} ({place.socket})\n"
    again = place.run("daemon", "start")
    assert again.returncode == 0 and again.stdout == f"vimaged is already running as pid {pid}\n"
    status = place.run("daemon", "status")
    assert status.returncode == 0
    assert re.fullmatch(rf"vimaged is running as pid {pid} \({re.escape(place.socket)}, "
                        r"protocol 1, up \d+\.\d s, 0 vnets, 1 connection\)\n", status.stdout)
    # a private socket in a private directory
    assert stat.S_IMODE(os.stat(place.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(place.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(place.paths.pid).st_mode) == 0o600
    stopped = place.run("daemon", "stop")
    assert stopped.returncode == 0 and stopped.stdout == "vimaged stopped\n"
    assert wait_gone(pid)
    assert not os.path.exists(place.socket) and not os.path.exists(place.paths.pid)
    gone = place.run("daemon", "status")
    assert gone.returncode == 1 and gone.stdout == f"vimaged is not running ({place.socket})\n"
    again = place.run("daemon", "stop")
    assert again.returncode == 1 and "not running" in again.stdout


def test_the_default_socket_lives_in_xdg_runtime_dir(place):
    runtime = os.path.join(place.dir, "run")
    os.mkdir(runtime, 0o700)
    env = place.env(XDG_RUNTIME_DIR=runtime)
    del env["VIMAGE_SOCKET"]
    done = subprocess.run(["vimage", "-l"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sock = os.path.join(runtime, "vimage", "vimaged.sock")
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    stop = subprocess.run(["vimage", "daemon", "stop"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert stop.returncode == 0 and not os.path.exists(sock)


def test_a_default_run_directory_that_is_not_private_is_refused(place):
    runtime = os.path.join(place.dir, "run")
    os.makedirs(os.path.join(runtime, "vimage"))
    os.chmod(os.path.join(runtime, "vimage"), 0o777)
    env = place.env(XDG_RUNTIME_DIR=runtime)
    del env["VIMAGE_SOCKET"]
    done = subprocess.run(["vimage", "-l"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "is not a private directory" in done.stderr


def test_first_use_starts_the_daemon(place):
    assert not os.path.exists(place.socket)
    done = place.run("-c", "first")
    assert done.returncode == 0, done.stderr
    assert daemon_pid(place.paths) is not None
    assert names(place.run("-l").stdout) == ["first"]


def test_clients_racing_to_start_the_daemon_start_exactly_one(place):
    procs = [subprocess.Popen(["vimage", "-c", f"racer{i}"], env=place.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(5)]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert results == [(0, "")] * 5
    assert len(daemon_processes(place.socket)) == 1
    with open(place.paths.log) as fh:
        assert fh.read().count("listening on") == 1
    assert names(place.run("-l").stdout) == [f"racer{i}" for i in range(5)]


def test_without_autostart_a_missing_daemon_is_one_line_and_status_1(place):
    done = place.run("-l", VIMAGE_AUTOSTART="0")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"vimage: no daemon is listening on {place.socket} "
                           "(start one with `vimage daemon start`)\n")
    assert daemon_pid(place.paths) is None


def test_a_daemon_killed_mid_request_is_one_line_and_status_1(vimaged):
    vimaged.ok("-c", "victim")
    proc = subprocess.Popen(["vimage", "victim", "ping", "-c", "1", "-t", "30", "127.0.0.2"],
                            env=vimaged.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    pid = daemon_pid(vimaged.paths)
    with vimaged.client() as c:  # the ping is in: 2 connections (it and us)
        assert until(lambda: c.request("status")["connections"] == 2)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""
    assert err.startswith(f"vimage: lost the daemon ({vimaged.socket}): ")
    assert err.count("\n") == 1
    assert wait_gone(pid)
    # the socket file is stale now; the next client starts a fresh daemon over it
    done = vimaged.run("-l")
    assert done.returncode == 0 and names(done.stdout) == []
    assert daemon_pid(vimaged.paths) not in (None, pid)


def test_sigterm_stops_cleanly(vimaged):
    vimaged.ok("-c", "t1")
    vimaged.ok("ifconfig", "epair", "create")
    vimaged.ok("-i", "t1", "epair0a")
    pid = daemon_pid(vimaged.paths)
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid)
    assert not os.path.exists(vimaged.socket) and not os.path.exists(vimaged.paths.pid)
    with open(vimaged.paths.log) as fh:
        log = fh.read()
    assert "stopping" in log and log.rstrip().endswith("stopped")


def test_stop_closes_channels_and_a_waiting_tool(vimaged):
    vimaged.ok("-c", "s1")
    # a process inside s1 that stays; its channel dies with the daemon
    inside = subprocess.Popen(["vimage", "s1", "sh", "-c", "read x; ifconfig -l"],
                              env=vimaged.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    waiting = subprocess.Popen(["vimage", "s1", "ping", "-c", "1", "-t", "30", "127.0.0.2"],
                               env=vimaged.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    with vimaged.client() as c:
        assert until(lambda: c.request("status")["connections"] == 2
                     and c.request("status")["doorbells"] == 1)
    pid = daemon_pid(vimaged.paths)
    stop = vimaged.run("daemon", "stop")
    assert stop.returncode == 0
    assert wait_gone(pid)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1 and "vimage: " in err and err.count("\n") == 1
    out, err = inside.communicate("go\n", timeout=30)
    assert inside.returncode == 1 and out == ""
    assert err.startswith("vimage: the control channel of vnet s1 is closed")
