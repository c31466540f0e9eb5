"""A `vimage exec` process's routing socket: `socket.socket(17, SOCK_RAW)` (FreeBSD's
AF_ROUTE) is relayed by vimaged to the vnet's routing socket, messages both ways."""

from __future__ import annotations

import os
import textwrap

PROGRAM = textwrap.dedent("""
    import select, socket, struct
    s = socket.socket(17, socket.SOCK_RAW, 0)
    assert s.family == 17 and s.getsockopt(socket.SOL_SOCKET, 0x40) == 1  # SO_USELOOPBACK
    def sin(a):
        return struct.pack("=BBH4s8x", 16, 2, 0, socket.inet_aton(a))
    body = sin("10.9.0.0") + sin("10.0.0.2") + sin("255.255.0.0")
    hdr = struct.pack("=HBBHHiiiiiiQ14Q", 152 + len(body), 5, 1, 0, 0, 0x803, 7, 0, 42, 0,
                      0, 0, *[0] * 14)
    s.send(hdr + body)
    ready, _, _ = select.select([s], [], [], 10)
    reply = s.recv(2048)
    f = struct.unpack_from("=HBBHHiiiiii", reply)
    print("reply", f[2], f[8], f[9], bool(f[5] & 0x40), len(reply))
    s.send(hdr + body)  # again: EEXIST on the next call (as a datagram socket's error)
    try:
        s.recv(2048)
    except FileExistsError:
        print("raised EEXIST")
    reply = s.recv(2048)  # and in the reply's rtm_errno
    print("errno", struct.unpack_from("=HBBHHiiiiii", reply)[9])
""")


def test_exec_process_adds_a_route_through_its_routing_socket(vimaged) -> None:
    d = vimaged
    d.ok("-c", "a")
    d.ok("-c", "b")
    end = d.ok("ifconfig", "epair", "create").strip()[:-1]
    d.ok("ifconfig", f"{end}a", "vnet", "a")
    d.ok("ifconfig", f"{end}b", "vnet", "b")
    d.ok("a", "ifconfig", f"{end}a", "10.0.0.1/24", "up")
    d.ok("b", "ifconfig", f"{end}b", "10.0.0.2/24", "up")
    path = os.path.join(d.dir, "rt.py")
    with open(path, "w") as fh:
        fh.write(PROGRAM)
    res = d.run("exec", "a", "--", "python", path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["reply 1 42 0 True 200", "raised EEXIST", "errno 17"]
    assert "10.9.0.0/16" in d.ok("a", "netstat", "-rn")
