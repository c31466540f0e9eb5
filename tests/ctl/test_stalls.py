"""No single client stalls the daemon: a tcpdump -r on a silent pipe, a half-sent frame, a
crowd of idle connections; and what a client must not do on its own (create directories,
print a traceback for bytes that are not UTF-8)."""

from __future__ import annotations

import fcntl
import io
import os
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from vimage.cli import vimage as cli
from vimage.ctl import protocol
from vimage.ctl.client import Client, connect_channel, start_daemon
from vimage.ctl.protocol import BUSY, CtlError
from vimage.wire import pcap

from .conftest import Vimaged, hello, names, private_daemon, recv_frame, send_frame, until

FRAME = bytes.fromhex("020000000002 020000000001 88b5") + b"vimage" * 4  # local experimental
PACKET_LINE = ("00:00:01.000000 02:00:00:00:00:01 > 02:00:00:00:00:02, "
               "ethertype Unknown (0x88b5), length 38:")


def pcap_bytes() -> bytes:
    """A pcap file of one Ethernet frame, at time 1 s."""
    out = io.BytesIO()
    writer = pcap.PcapWriter(out, pcap.LINKTYPE_ETHERNET, precision="micro")
    writer.write(1_000_000_000, FRAME, len(FRAME))
    return out.getvalue()


def within(seconds: float, func, *args, **kwargs):
    """func(*args, **kwargs) run in a thread: its result, or a test failure if it takes
    longer (the test does not hang on a daemon that does)."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(func(*args, **kwargs)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"{func.__name__} did not answer within {seconds} s"
    return box[0]


def unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


# -- tcpdump -r --------------------------------------------------------------------------------
def test_tcpdump_reading_a_silent_fifo_does_not_hold_up_the_daemon(vimaged, tmp_path):
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR)  # a writer that stays silent
    data = pcap_bytes()
    os.write(held, data[:2])  # half a magic number: the reader waits for the rest
    reader = subprocess.Popen(["vimage", "tcpdump", "-r", "cap.fifo"], env=vimaged.env(),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert until(lambda: unread(held) == 0)  # the daemon has read them: it is waiting
        with vimaged.client() as c:
            t0 = time.monotonic()
            assert within(5, c.request, "list", name="", recursive=False) == {"vnets": []}
            assert within(5, c.tool, ["sysctl", "-n", "net.inet.ip.ttl"]) == (0, "64\n")
            assert time.monotonic() - t0 < 2.0
        status, out, err = within(5, vimaged.cli, "-l")
        assert (status, names(out), err) == (0, [], "")
        assert reader.poll() is None  # still reading
        os.write(held, data[2:])
    finally:
        os.close(held)  # the last writer: the reader sees the end of the file
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert out.decode().splitlines()[:2] == [
        "reading from file cap.fifo, link-type EN10MB (Ethernet), snapshot length 262144",
        PACKET_LINE]


def test_tcpdump_r_dash_reads_the_clients_standard_input(vimaged):
    done = subprocess.run(["vimage", "tcpdump", "-r", "-"], env=vimaged.env(),
                          input=pcap_bytes(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[:2] == [
        "reading from file -, link-type EN10MB (Ethernet), snapshot length 262144", PACKET_LINE]
    empty = subprocess.run(["vimage", "tcpdump", "-nr-"], env=vimaged.env(), input=b"",
                           capture_output=True, timeout=60)
    assert empty.returncode == 1
    assert empty.stdout == (b"tcpdump: -: truncated dump file; tried to read 4 file header "
                            b"bytes, only got 0\n")
    with vimaged.client() as c:  # bounded: more than MAX_STDIN is not sent
        status, output = c.tool(["tcpdump", "-r", "-"], stdin=b"\0" * (protocol.MAX_STDIN + 1))
        assert status == 1 and output.startswith("tcpdump: -: standard input is over the 512 KiB")
        assert c.tool(["tcpdump", "-c", "1", "-r", "-"], stdin=pcap_bytes())[0] == 0


def test_tcpdump_messages_name_the_file_the_user_typed(vimaged, tmp_path, monkeypatch):
    (tmp_path / "junk.pcap").write_bytes(b"not a pcap file at all")
    monkeypatch.chdir(tmp_path)
    with vimaged.client() as c:
        assert c.tool(["tcpdump", "-r", "junk.pcap"]) == (
            1, "tcpdump: junk.pcap: bad dump file format\n")
        assert c.tool(["tcpdump", "-r", "/no/such"]) == (
            1, "tcpdump: /no/such: No such file or directory\n")


def test_tcpdump_file_names_that_are_not_utf8_are_opened_by_the_client(vimaged, tmp_path):
    src = tmp_path / b"\xff.pcap".decode(errors="surrogateescape")
    src.write_bytes(pcap_bytes())  # a file name that is not UTF-8 is opened by the client
    done = subprocess.run([b"vimage", b"tcpdump", b"-r", os.fsencode(src), b"-w", b"copy.pcap"],
                          env=vimaged.env(), cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == (f"reading from file {tmp_path}/\\xff.pcap, link-type EN10MB "
                                    "(Ethernet), snapshot length 262144\n")
    assert (tmp_path / "copy.pcap").read_bytes()[24:] == pcap_bytes()[24:]


# -- arguments that are not UTF-8 --------------------------------------------------------------
def test_arguments_that_are_not_utf8_are_one_line_errors(vimaged):
    for argv, message in (
            ([b"ifconfig", b"\xff"], "vimage: ifconfig: argument '\\xff' is not valid UTF-8 "
                                     "(vimage passes tool arguments as text)\n"),
            ([b"-c", b"a\xfe"], "vimage: 'a\\xfe' is not valid UTF-8 (the vimage control "
                                "protocol carries text)\n"),
            ([b"exec", b"\xff", b"true"], "vimage: '\\xff' is not valid UTF-8 (the vimage "
                                          "control protocol carries text)\n")):
        done = subprocess.run([b"vimage", *argv], env=vimaged.env(), capture_output=True,
                              timeout=60)
        assert (done.returncode, done.stdout, done.stderr.decode()) == (1, b"", message)


def test_exec_passes_arguments_that_are_not_utf8_to_the_program_intact(vimaged):
    vimaged.ok("-c", "bytes")
    try:
        done = subprocess.run([b"vimage", b"exec", b"bytes", b"--", b"printf", b"%s|",
                               b"\xff\xfe", b"caf\xc3\xa9"], env=vimaged.env(),
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"\xff\xfe|caf\xc3\xa9|"
    finally:
        vimaged.ok("-d", "bytes")


# -- an explicit socket path -------------------------------------------------------------------
def test_an_explicit_socket_in_a_missing_directory_is_an_error_not_a_mkdir(place, monkeypatch,
                                                                            capsys):
    typo = os.path.join(place.dir, "typo", "dir", "sock")
    expected = (f"vimage: {typo}: No such file or directory (vimage creates only its default "
                "run directory)\n")
    assert cli.main(["--socket", typo, "-l"]) == 1
    assert capsys.readouterr().err == expected
    assert cli.main(["--socket", typo, "daemon", "start"]) == 1
    assert capsys.readouterr().err == expected
    monkeypatch.setenv("VIMAGE_SOCKET", typo)
    monkeypatch.delenv("VIMAGE_CTL_FD", raising=False)
    assert cli.main(["-l"]) == 1
    assert capsys.readouterr().err == expected
    assert not os.path.exists(os.path.join(place.dir, "typo"))


# -- the control socket -----------------------------------------------------------------------
@pytest.fixture
def tight() -> Iterator[Vimaged]:
    """A daemon with 8 connections (2 kept for the host) and a 0.3 s frame timeout."""
    with private_daemon() as vd:
        start_daemon(vd.paths, ["--max-connections", "8", "--reserved-connections", "2",
                                "--frame-timeout", "0.3"])
        yield vd


def test_a_half_sent_frame_is_closed_after_the_frame_timeout(tight):
    idle, stuck = tight.raw(), tight.raw()
    try:
        hello(idle)
        hello(stuck)
        stuck.sendall(protocol.HEADER.pack(100) + b'{"id": 1, "op"')  # and no more
        t0 = time.monotonic()
        assert stuck.recv(1) == b""  # closed by the daemon
        assert 0.2 < time.monotonic() - t0 < 5.0
        send_frame(idle, {"id": 5, "op": "nop"})  # idle between frames is no fault
        assert recv_frame(idle) == {"id": 5, "ok": True}
        never = tight.raw()  # a hello that never finishes goes the same way
        never.sendall(b"\0\0")
        assert never.recv(1) == b""
        never.close()
    finally:
        idle.close()
        stuck.close()


def test_frames_that_take_too_long_are_cut_by_the_reader():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"\0\0\0\x05{}")
        with pytest.raises(protocol.FrameTimeout):
            protocol.recv(ours, 100, frame_timeout=0.1)
        assert ours.gettimeout() is None  # restored


def test_idle_channels_cannot_lock_the_host_owner_out(tight):
    tight.ok("-c", "crowd")
    with tight.client() as host:
        _, fds = host.call("exec", vnet="crowd")
    channel = fds[0]
    held: list[Client] = []
    try:
        for _ in range(6):  # 8 slots, 2 of them the host's: 6 for channels
            held.append(connect_channel(str(channel), "crowd"))
        with pytest.raises(CtlError) as busy:
            connect_channel(str(channel), "crowd")
        assert busy.value.code == BUSY
        status, out, err = tight.cli("-l")
        assert (status, names(out), err) == (0, ["crowd"], "")  # the owner still administers
        # the daemon frees a closed connection's slot when it reads the end, a moment
        # after the client closed it (the host's above, cli's just now): retry meanwhile
        for _ in range(2):
            assert until(lambda: _connected(tight, held))
        with pytest.raises(CtlError) as full:  # now all 8 are taken
            tight.client()
        assert full.value.code == BUSY
        held.pop().close()
        assert until(lambda: tight.cli("-l")[0] == 0)
    finally:
        for c in held:
            c.close()
        os.close(channel)
        assert until(lambda: tight.cli("-d", "crowd")[0] == 0)


def _connected(daemon: Vimaged, held: list[Client]) -> bool:
    """One more host connection in `held`, or False while the daemon is full."""
    try:
        held.append(daemon.client())
    except CtlError as exc:
        assert exc.code == BUSY
        return False
    return True


def test_a_socket_path_that_is_not_utf8_is_shown_escaped(place, capsys):
    odd = os.path.join(place.dir, "a\udcff", "sock")  # what argv makes of the byte 0xff
    assert cli.main(["--socket", odd, "daemon", "status"]) == 1
    shown = os.path.join(place.dir, "a\\xff", "sock")
    assert capsys.readouterr().out == f"vimaged is not running ({shown})\n"
    assert cli.main(["--socket", odd, "-l"]) == 1
    assert capsys.readouterr().err == (f"vimage: {shown}: No such file or directory (vimage "
                                       "creates only its default run directory)\n")
