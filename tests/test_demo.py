"""The README's demo runs end to end and its ping gets every reply."""

import io

from vimage.demo import run


def test_demo_pings_across_the_router():
    out = io.StringIO()
    assert run("virtual", out) == 0
    text = out.getvalue()
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in text
    assert " 2  10.0.2.2 " in text  # traceroute reached b through r
    assert text.count("3 packets transmitted, 3 packets received, 0.0% packet loss") == 2
    assert "--- 2001:db8:2::2 ping6 statistics ---" in text  # and over IPv6
    assert " 2  2001:db8:2::2 " in text  # traceroute6 too
    assert "timers left: 0" in text
