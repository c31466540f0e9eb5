"""setkey(8): commands, dumps, files, and errors that apply nothing."""

from __future__ import annotations

from vimage.kernel import Kernel

GCM = "0x" + bytes(range(1, 21)).hex()
SA = f"add 192.0.2.1 192.0.2.2 esp 0x1000 -m transport -E aes-gcm-16 {GCM};"
SP = "spdadd 10.1.0.0/24 10.2.0.0/24[80] tcp -P out ipsec esp/tunnel/192.0.2.1-192.0.2.2/unique:7;"


def vnet():
    return Kernel(clock="virtual", seed=1).create("a")


def test_add_get_dump_delete_flush():
    a = vnet()
    assert a.cmd("setkey -D").output == "No SAD entries.\n"
    r = a.cmd("setkey -c", stdin=(SA + "\nadd 192.0.2.2 192.0.2.1 esp 4097 -u 5 -r 128 "
                                  "-E aes-cbc 0x" + "11" * 16 + " -A hmac-sha2-256 0x" + "22" * 32
                                  + ";\n").encode())
    assert r.status == 0, r.output
    got = a.cmd("setkey -c", stdin=b"get 192.0.2.2 192.0.2.1 esp 0x1001;").output.splitlines()
    assert got[0] == "192.0.2.2 192.0.2.1"
    assert got[1] == "\tesp mode=any spi=4097(0x00001001) reqid=5(0x00000005)"
    assert got[2] == "\tE: aes-cbc  11111111 11111111 11111111 11111111"
    assert got[3].startswith("\tA: hmac-sha2-256  22222222 ")
    assert got[4] == "\tseq=0x00000000 replay=128 flags=0x00000000 state=mature"
    dump = a.cmd("setkey -D").output
    assert dump.count("\tesp mode=") == 2 and "E: aes-gcm-16  01020304 " in dump
    assert a.cmd("setkey -c", stdin=b"delete 192.0.2.1 192.0.2.2 esp 0x1000;").status == 0
    assert len(a.ipsec.sad) == 1
    r = a.cmd("setkey -c", stdin=b"delete 192.0.2.1 192.0.2.2 esp 0x1000;")
    assert r.status == 1 and "line 1: No such process; nothing applied" in r.output
    assert a.cmd("setkey -c", stdin=b"deleteall 192.0.2.2 192.0.2.1 esp;").status == 0
    assert a.ipsec.sad == []
    a.cmd("setkey -c", stdin=SA.encode())
    assert a.cmd("setkey -F").status == 0 and a.ipsec.sad == []
    a.cmd("setkey -c", stdin=SA.encode())
    assert a.cmd("setkey -c", stdin=b"flush esp;").status == 0 and a.ipsec.sad == []


def test_spdadd_dump_delete_flush():
    a = vnet()
    assert a.cmd("setkey -DP").output == "No SPD entries.\n"
    assert a.cmd("setkey -c", stdin=(SP + "\nspdadd 0.0.0.0/0 192.0.2.9 icmp -P in discard;")
                 .encode()).status == 0
    lines = a.cmd("setkey -D -P").output.splitlines()
    assert lines[0] == "10.1.0.0/24[any] 10.2.0.0/24[80] tcp"
    assert lines[1:3] == ["\tout ipsec", "\tesp/tunnel/192.0.2.1-192.0.2.2/unique:7"]
    assert "\tspid=1 seq=0 pid=0 scope=global" in lines
    assert "0.0.0.0/0[any] 192.0.2.9[any] icmp" in lines and "\tin discard" in lines
    assert a.cmd("setkey -c", stdin=b"spddelete 10.1.0.0/24 10.2.0.0/24[80] tcp -P out;"
                 ).status == 0
    assert len(a.ipsec.spd) == 1
    assert a.cmd("setkey -c", stdin=b"spdflush;").status == 0 and a.ipsec.spd == []
    a.cmd("setkey -c", stdin=SP.encode())
    assert a.cmd("setkey -FP").status == 0 and a.ipsec.spd == []


def test_dump_and_spddump_commands():
    a = vnet()
    r = a.cmd("setkey -c", stdin=(SA + SP + "dump;\nspddump;").encode())
    assert "\tesp mode=transport spi=4096(0x00001000)" in r.output
    assert "\tout ipsec" in r.output


def test_syntax_error_reports_line_and_applies_nothing(tmp_path):
    a = vnet()
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"# keys\n{SA}\n{SP}\n\nspdadd 10.0.0.1 10.0.0.2 any\n  -P out bogus;\n")
    r = a.cmd(f"setkey -f {conf}")
    assert r.status == 1
    assert f"setkey: {conf}: line 5: syntax error at [bogus]" in r.output
    assert a.ipsec.sad == [] and a.ipsec.spd == []
    for bad, where in ((f"{SA}\nadd 192.0.2.1 192.0.2.2 esp 0x1001 -E aes-gcm-16 0x0102;",
                        "line 2: aes-gcm-16 needs a 160, 224 or 288 bit key"),
                       ("add 192.0.2.1 192.0.2.2 esp 0x10 -E null -A hmac-sha2-256 0x00;",
                        "line 1: invalid SPI 16"),
                       ("spdadd 10.0.0.1 10.0.0.2 any -P out ipsec ah/transport//require;",
                        "line 1: syntax error at [ah/transport//require]"),
                       ("spdadd 10.0.0.1 10.0.0.2 any -P fwd none;",
                        "line 1: syntax error at [fwd]"),
                       ("spdflush", "line 1: syntax error at [spdflush]: missing ';'"),
                       ("frobnicate;", "line 1: syntax error at [frobnicate]")):
        r = a.cmd("setkey -c", stdin=bad.encode())
        assert r.status == 1 and where in r.output, (bad, r.output)
    assert a.ipsec.sad == [] and a.ipsec.spd == []


def test_failing_command_undoes_the_input():
    a = vnet()
    assert a.cmd("setkey -c", stdin=SA.encode()).status == 0
    r = a.cmd("setkey -c", stdin=(SP + "\n" + SA.replace("0x1000", "0x2000") + "\n" + SA).encode())
    assert r.status == 1 and "line 3: File exists; nothing applied" in r.output
    assert len(a.ipsec.sad) == 1 and a.ipsec.spd == []
    assert a.ip.pfil_out is None  # no policy left: the hooks went too


def test_file_from_stdin_and_usage():
    a = vnet()
    assert a.cmd("setkey -f -", stdin=SA.encode()).status == 0
    assert len(a.ipsec.sad) == 1
    r = a.cmd("setkey")
    assert r.status == 64 and r.output.startswith("usage: setkey")
    assert a.cmd("setkey -f /nonexistent/file").status == 1


def test_setkey_through_the_vimage_file_operand_spec():
    from vimage.ctl.policy import file_operands

    argv, where = file_operands(["setkey", "-f", "/tmp/x.conf"])
    assert argv == ["setkey", "-f", "/tmp/x.conf"] and where == [(2, "rb")]
    # -c reads standard input: the client forwards it as for `-f -`
    assert file_operands(["setkey", "-c"]) == (["setkey", "-f", "-"], [(2, "rb")])
    assert file_operands(["setkey", "-DP"]) == (["setkey", "-D", "-P"], [])
