"""The GUI in a real browser: headless Chromium from Debian's packages, driven by Selenium.

Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver explicitly, so
selenium-manager never runs and nothing is downloaded. Without them (or without
selenium) these tests skip, saying so; CI installs the Debian packages `chromium` and
`chromium-driver`. The server is `GuiServer` in a thread of the test process, with a
real-time kernel: a ping here takes real time (two pings of three packets 0.2 s apart).

The screenshot is saved as a test artifact: `gui-routing.png` in the test's tmp_path
(`<basetemp>/test_ping_from_a_console_and_a_live_delay_change0/` with `--basetemp`),
and its path printed.
"""

from __future__ import annotations

import re
import shutil
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROUTING = Path(__file__).resolve().parent / "data" / "routing.yaml"  # static routes

pytest.importorskip("fastapi", reason="the GUI needs fastapi (pip install 'vimage[gui]')")
pytest.importorskip("uvicorn", reason="the GUI needs uvicorn (pip install 'vimage[gui]')")
pytest.importorskip("selenium", reason="browser tests need selenium (pip install selenium)")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("browser tests need /usr/bin/chromium and /usr/bin/chromedriver "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from vimage.emu import yamlfmt  # noqa: E402
from vimage.web.server import GuiServer  # noqa: E402
from vimage.web.session import GuiSession  # noqa: E402

from .conftest import SPLIT, PartitionedGui  # noqa: E402

WAIT = 15.0  # seconds a page may take to show something (real time, a loaded machine)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture
def gui(tmp_path):
    path = tmp_path / "routing.yaml"
    shutil.copy(ROUTING, path)
    server = GuiServer(GuiSession.open(path))
    server.start()
    yield server
    server.stop()


def wait(driver, predicate, what: str):
    return WebDriverWait(driver, WAIT).until(lambda d: predicate(d), f"waited for {what}")


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def click_node(driver, name: str) -> None:
    """Click a node's circle; again if the canvas was redrawn meanwhile (a counters
    message that finds the run state changed reloads the view)."""
    for _ in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, f'g.node[data-name="{name}"] circle').click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"could not click node {name}: the canvas kept changing")


def select_link(driver, a: str, b: str) -> None:
    """Click the link's graph (its line is too thin for Selenium to click reliably)."""
    driver.find_element(By.CSS_SELECTOR, f'g.link[data-a="{a}"][data-b="{b}"] rect').click()


def ping(driver, line: str, replies: int) -> float:
    """Run `line` in the open console; the minimum RTT of its summary (ms). In real time
    on a loaded machine an RTT only grows, so the minimum is the one to compare (the
    first packet also waits for ARP on every hop)."""
    before = text_of(driver, "console-output").count("round-trip")
    field = driver.find_element(By.ID, "console-input")
    field.send_keys(line, Keys.ENTER)
    wait(driver, lambda d: text_of(d, "console-output").count("round-trip") > before,
         f"the output of {line!r}")
    output = text_of(driver, "console-output")
    assert output.count(f"{replies} packets received") == before + 1, output
    minima = re.findall(r"round-trip min/avg/max/stddev = ([\d.]+)/", output)
    return float(minima[-1])


def test_ping_from_a_console_and_a_live_delay_change(browser, gui, tmp_path):
    browser.get(gui.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.node[data-name="pc2"]'),
         "the topology")
    assert len(browser.find_elements(By.CSS_SELECTOR, "g.node")) == 5
    assert len(browser.find_elements(By.CSS_SELECTOR, "g.link")) == 4
    assert text_of(browser, "status") == "stopped"

    browser.find_element(By.ID, "start").click()
    wait(browser, lambda d: text_of(d, "status") == "running", "the experiment to start")
    assert gui.session.is_up

    click_node(browser, "pc1")
    browser.find_element(By.ID, "open-console").click()
    assert text_of(browser, "console-node") == "pc1"
    before = ping(browser, "ping -c 3 -i 0.2 10.0.3.20", 3)
    assert 24 <= before < 100  # 2 x (1 + 5 + 5 + 1) ms of link delay, plus transmission

    select_link(browser, "r1", "r2")
    delay = browser.find_element(By.ID, "param-delay")
    assert delay.get_attribute("value") == "5ms"
    delay.clear()
    delay.send_keys("50ms")
    browser.find_element(By.ID, "apply-link").click()
    wait(browser, lambda d: "changed (live)" in text_of(d, "message"), "the link change")
    assert gui.session.topology.link_between("r1", "r2").delay == 50_000
    browser.find_element(By.ID, "capture-start").click()
    wait(browser, lambda d: d.find_elements(By.ID, "capture-download"), "the capture")

    click_node(browser, "pc1")
    browser.find_element(By.ID, "open-console").click()
    after = ping(browser, "ping -c 3 -i 0.2 10.0.3.20", 3)
    assert after >= 114 > before  # 2 x (1 + 50 + 5 + 1) ms: the new delay applies
    assert after - before == pytest.approx(90, abs=40)  # 2 x (50 - 5) ms more, give or take load

    select_link(browser, "r1", "r2")
    browser.find_element(By.ID, "capture-stop").click()
    wait(browser, lambda d: "so far" not in text_of(d, "capture-download"), "the capture to stop")
    assert text_of(browser, "capture-download") == "pcap: 6 frames"  # 3 requests, 3 replies
    href = browser.find_element(By.ID, "capture-download").get_attribute("href")
    with urllib.request.urlopen(href, timeout=10) as answer:  # the token is in the link
        pcap = answer.read()
    assert pcap[:4] == bytes.fromhex("4d3cb2a1") and pcap.count(b"\x08\x00\x45") == 6

    # the counters reached the page over the websocket: a sparkline shows the ping
    wait(browser, lambda d: "bit/s" in d.find_element(
        By.CSS_SELECTOR, 'g.link[data-a="pc1"][data-b="r1"]').text, "the link counters")
    shot = tmp_path / "gui-routing.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    browser.find_element(By.ID, "stop").click()
    wait(browser, lambda d: text_of(d, "status") == "stopped", "the experiment to stop")
    assert not gui.session.is_up


def test_add_a_node_and_a_link_then_save(browser, gui):
    browser.get(gui.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.node[data-name="r2"]'),
         "the topology")
    browser.find_element(By.CSS_SELECTOR, '#new-type option[value="host"]').click()
    browser.find_element(By.ID, "add-node").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.node[data-name="host1"]'),
         "the new node")
    browser.find_element(By.ID, "add-link").click()
    click_node(browser, "host1")
    click_node(browser, "r2")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.link[data-a="host1"]'),
         "the new link")
    click_node(browser, "host1")
    address = browser.find_element(By.ID, "addr-eth0")
    assert address.get_attribute("placeholder") == "10.0.4.10/24"  # automatic addressing
    address.send_keys("10.0.4.99/24")
    browser.find_element(By.ID, "apply-node").click()
    wait(browser, lambda d: "addresses changed" in text_of(d, "message"), "the addresses")
    browser.find_element(By.ID, "save").click()
    wait(browser, lambda d: "saved" in text_of(d, "message"), "the save")
    saved = yamlfmt.load(gui.session.path)
    assert saved.nodes["host1"].type == "host"
    assert saved.nodes["host1"].interfaces["eth0"].ipv4 == ["10.0.4.99/24"]
    assert saved.link_between("host1", "r2").b == ("r2", "eth2")

    click_node(browser, "host1")
    browser.find_element(By.ID, "delete-node").click()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, 'g.node[data-name="host1"]'),
         "the node to go")
    assert "host1" not in gui.session.topology.nodes
    assert "eth2" not in gui.session.topology.nodes["r2"].interfaces


def test_a_console_on_a_node_of_rank_1_of_a_partitioned_experiment(browser, tmp_path):
    """`mpirun -n 2 vimage gui`: the same page; pc1 is on rank 1, pc2 on rank 0."""
    path = tmp_path / "split.yaml"
    shutil.copy(SPLIT, path)
    gui = PartitionedGui(path)
    try:
        browser.get(gui.url)
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'g.node[data-name="pc2"]'),
             "the topology")
        browser.find_element(By.ID, "start").click()
        wait(browser, lambda d: text_of(d, "status") == "running", "the experiment to start")
        click_node(browser, "pc1")
        assert "rank 1" in text_of(browser, "node-rank")
        browser.find_element(By.ID, "open-console").click()
        assert text_of(browser, "console-node") == "pc1"
        assert ping(browser, "ping -c 2 -i 0.2 10.0.3.20", 2) >= 24  # to rank 0, tunnelled
        shot = tmp_path / "gui-partitioned.png"
        assert browser.save_screenshot(str(shot))
        browser.find_element(By.ID, "stop").click()
        wait(browser, lambda d: text_of(d, "status") == "stopped", "the experiment to stop")
    finally:
        _, err = gui.stop()
    assert "Traceback" not in err, err
