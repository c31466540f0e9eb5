"""`vimage exec` processes: SOCK_NONBLOCK in the type argument, and recvmsg's control
messages carried by the relay (kind 2 datagrams of vimage.ctl.remote)."""

from __future__ import annotations

from tests.ctl.test_exec_sockets import run_in

PROGRAM = """
    import select, socket, struct
    IP_RECVDSTADDR, IP_RECVTTL, IP_RECVIF = 7, 65, 20  # FreeBSD's values
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    print("type", int(s.type), "timeout", s.gettimeout(), "inheritable", s.get_inheritable())
    try:
        s.recv(10)
    except BlockingIOError as exc:
        print("recv", exc.errno)
    s.bind(("127.0.0.1", 5000))
    for option in (IP_RECVDSTADDR, IP_RECVTTL, IP_RECVIF):
        s.setsockopt(socket.IPPROTO_IP, option, 1)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7)
    out.sendto(b"0123456789", ("127.0.0.1", 5000))
    select.select([s], [], [], 10)
    data, anc, flags, addr = s.recvmsg(4, 1024)
    print("data", data, flags == socket.MSG_TRUNC, addr[0])
    for level, kind, value in anc:
        print("cmsg", level, kind, value[:4].hex() if kind != IP_RECVIF else value[4])
    out.sendto(b"again", ("127.0.0.1", 5000))
    select.select([s], [], [], 10)
    data, anc, flags, _ = s.recvmsg(100, socket.CMSG_SPACE(4))
    print("small", data, len(anc), flags == socket.MSG_CTRUNC)
"""


def test_exec_process_nonblocking_socket_and_recvmsg_control(vimaged):
    vimaged.ok("-c", "m")
    out = run_in(vimaged, "m", PROGRAM).splitlines()
    assert out[0] == "type 2 timeout 0.0 inheritable False"
    assert out[1] == "recv 11"
    assert out[2] == "data b'0123' True 127.0.0.1"
    assert out[3:6] == ["cmsg 0 7 7f000001", "cmsg 0 65 07", "cmsg 0 20 24"]  # lo0: IFT_LOOP
    assert out[6] == "small b'again' 1 True"


HALF_CLOSE = """
    import select, socket
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 7000))
    srv.listen()
    cli = socket.create_connection(("127.0.0.1", 7000), timeout=10)
    conn, _ = srv.accept()
    p = select.poll()
    p.register(cli, select.POLLIN | select.POLLRDHUP)
    print("before", p.poll(0))
    conn.shutdown(socket.SHUT_WR)
    [(fd, revents)] = p.poll(10000)
    print("rdhup", bool(revents & select.POLLRDHUP), bool(revents & select.POLLIN))
    print("eof", cli.recv(10))
    cli.sendall(b"back")
    print("other way", conn.recv(10))
"""


def test_exec_process_poll_sees_pollrdhup_on_the_peers_half_close(vimaged):
    vimaged.ok("-c", "h")
    out = run_in(vimaged, "h", HALF_CLOSE).splitlines()
    assert out == ["before []", "rdhup True True", "eof b''", "other way b'back'"]


SEND = """
    import socket
    IP_SENDSRCADDR = 7  # FreeBSD's
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.settimeout(10)
    rx.bind(("127.0.0.1", 5001))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("", 0))
    src = socket.inet_aton("127.0.0.2")  # an alias of lo0 (the test adds it)
    n = tx.sendmsg([b"he", b"llo"], [(socket.IPPROTO_IP, IP_SENDSRCADDR, src)], 0,
                   ("127.0.0.1", 5001))
    print(n, rx.recvfrom(100)[1][0])
    tx.sendmsg([b"plain"], [], 0, ("127.0.0.1", 5001))
    print(rx.recvfrom(100)[0].decode())
    srv = socket.socket()
    srv.bind(("127.0.0.1", 7001))
    srv.listen()
    c = socket.create_connection(("127.0.0.1", 7001), timeout=10)
    conn, _ = srv.accept()
    c.sendto(b"stream ", ("192.0.2.1", 9))  # connected: the address is ignored
    c.sendmsg([b"msg"])
    got = b""
    while len(got) < 10:
        got += conn.recv(100)
    print(got.decode())
"""


def test_exec_process_sendmsg_chooses_the_source_and_tcp_sendto(vimaged):
    vimaged.ok("-c", "s")
    vimaged.ok("s", "ifconfig", "lo0", "inet", "127.0.0.2/32", "alias")
    out = run_in(vimaged, "s", SEND).splitlines()
    assert out == ["5 127.0.0.2", "plain", "stream msg"]
