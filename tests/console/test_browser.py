"""The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
installed by scripts/install) driven by selenium, against a real node process.

Every page loads without a browser console error, each action does what it says (checked
through boto3), a record holding markup shows as text, the live tail shows a record put through
boto3, and each main page is screenshotted: into a temporary directory, or into the directory
named by SHOAL_CONSOLE_SCREENSHOTS (`docs/console` refreshes the README's pictures). One
browser session serves the whole module.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from broker.client.video_producer import PutMediaTarget, put_media
from broker.video.acks import AckEventType
from tests.support import NodeProcess, serving, wait_until
from tests.video.media import h264_mkv

pytestmark = [pytest.mark.process, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs Debian's chromium and chromium-driver (scripts/install installs them as root); "
        f"found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402 (only once the browser is known to exist)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

PAGE_WAIT_S = 60  # generous: the suite shares two cores with other work


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data = tmp_path_factory.mktemp("console-node") / "node"
    process = NodeProcess(data, extra_env={"SHOAL_REPLICATION_FACTOR": "1"})
    process.start()
    try:
        wait_until(lambda: serving(process.endpoint), deadline_s=60, what="the node to serve")
        yield process
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def api(node: NodeProcess) -> Iterator[Any]:
    client = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 2}),
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_WAIT_S)
    driver.set_script_timeout(PAGE_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("SHOAL_CONSOLE_SCREENSHOTS")
    if wanted:
        folder = Path(wanted)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("console-screenshots")


def console(node: NodeProcess, path: str = "") -> str:
    return f"http://127.0.0.1:{node.http_port}/console{path}"


def console_errors(browser: Any) -> list[str]:
    """The browser console's errors since the last call (warnings and info are not failures)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


# Form controls without a label: no <label for>, no wrapping <label>, no aria-label.
UNLABELLED_CONTROLS = """
return Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea'
)).filter(c => c.labels.length === 0 && !c.getAttribute('aria-label')).map(c => c.outerHTML);
"""


AXE_SOURCE = (Path(__file__).resolve().parent / "vendor" / "axe.min.js").read_text()
# axe-core's WCAG 2 A and AA rules (labels, names, contrast, landmarks...) on the open page.
AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})
  .then(result => done(result.violations.map(v => v.id + ': ' + v.help + ' (' +
       v.nodes.slice(0, 3).map(n => n.target.join(' ')).join('; ') + ')')))
  .catch(error => done(['axe failed: ' + error]));
"""


def accessibility_violations(browser: Any) -> list[str]:
    """axe-core's WCAG 2 A/AA violations on the open page (injected by the driver, which the
    page's CSP does not restrict; the node never serves it)."""
    browser.execute_script(AXE_SOURCE)
    return list(browser.execute_async_script(AXE_RUN))


def open_page(browser: Any, address: str) -> None:
    browser.get(address)
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete",
        deadline_s=PAGE_WAIT_S,
        what=f"{address} to load",
    )


def test_every_page_loads_without_console_errors(
    browser: Any, node: NodeProcess, api: Any, shots: Path
) -> None:
    api.create_stream(StreamName="clicks", ShardCount=3)
    for user, page, ms in (("user-1", "/home", 41), ("user-2", "/cart", 97), ("user-3", "/", 8)):
        data = b'{"page": "%s", "ms": %d, "ok": true}' % (page.encode(), ms)
        api.put_record(StreamName="clicks", PartitionKey=user, Data=data, ExplicitHashKey="7")
    api.split_shard(
        StreamName="clicks",
        ShardToSplit="shardId-000000000000",
        NewStartingHashKey=str(2**128 // 6),
    )
    for index in range(12):
        api.create_stream(StreamName=f"orders-{index:02d}", ShardCount=1)
    sql = boto3.client(
        "kinesisanalytics",
        endpoint_url=f"http://127.0.0.1:{node.http_port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    sql.create_application(
        ApplicationName="clicks-per-page",
        ApplicationCode='CREATE OR REPLACE STREAM "PAGES" (page VARCHAR(64));',
    )
    sql.close()
    pages = {
        "overview": "",
        "streams": "/streams",
        "stream": "/streams/clicks",
        "records": "/streams/clicks/records?go=1&shard=shardId-000000000000&view=json",
        "create": "/streams/new",
        "video": "/video",
        "delivery-streams": "/delivery-streams",
        "applications": "/applications",
        "application": "/applications/clicks-per-page",
    }
    console_errors(browser)
    for name, path in pages.items():
        open_page(browser, console(node, path))
        assert browser.find_element(By.TAG_NAME, "h1").text, f"{name} has no heading"
        browser.save_screenshot(str(shots / f"{name}.png"))
        assert console_errors(browser) == [], f"browser console errors on {name}"
        assert browser.execute_script(UNLABELLED_CONTROLS) == [], f"unlabelled controls on {name}"
        assert accessibility_violations(browser) == [], f"WCAG 2 AA violations on {name}"
        assert browser.execute_script("return document.documentElement.lang") == "en"
    # Keyboard: the first Tab reaches the skip link, which moves focus to the main content.
    open_page(browser, console(node, "/streams/clicks"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    open_page(browser, console(node, "/streams"))
    sparklines = browser.find_elements(By.CSS_SELECTOR, ".spark canvas")
    assert sparklines, "uPlot drew no sparkline"
    browser.set_window_size(390, 844)  # a phone
    try:
        open_page(browser, console(node, "/streams/clicks"))
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, "the page scrolls sideways on a narrow screen"
        browser.save_screenshot(str(shots / "stream-narrow.png"))
    finally:
        browser.set_window_size(1280, 900)
    assert console_errors(browser) == []


def test_search_as_you_type(browser: Any, node: NodeProcess, api: Any) -> None:
    api.create_stream(StreamName="needle-in-haystack", ShardCount=1)
    open_page(browser, console(node, "/streams"))
    box = browser.find_element(By.ID, "q")
    box.send_keys("needle")
    # Read in one script: htmx may swap the table between a lookup and its .text (stale).
    table_text = "return document.getElementById('streams-table').textContent"
    wait_until(
        lambda: "1 stream matching" in browser.execute_script(table_text),
        deadline_s=PAGE_WAIT_S,
        what="the streams table to show the search result",
    )
    assert "needle-in-haystack" in browser.execute_script(table_text)
    assert console_errors(browser) == []


def test_actions_do_what_they_say(browser: Any, node: NodeProcess, api: Any, shots: Path) -> None:
    open_page(browser, console(node, "/streams/new"))
    browser.find_element(By.ID, "name").send_keys("made-in-browser")
    shard_count = browser.find_element(By.ID, "shard_count")
    shard_count.clear()
    shard_count.send_keys("2")
    shard_count.submit()
    wait_until(
        lambda: browser.find_elements(By.ID, "confirm"), deadline_s=PAGE_WAIT_S, what="confirm"
    )
    browser.save_screenshot(str(shots / "confirm.png"))
    assert "made-in-browser" not in api.list_streams()["StreamNames"]
    browser.find_element(By.ID, "confirm").click()
    wait_until(
        lambda: "CreateStream accepted" in browser.page_source,
        deadline_s=PAGE_WAIT_S,
        what="the stream page after CreateStream",
    )
    summary = api.describe_stream_summary(StreamName="made-in-browser")["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2

    target = browser.find_element(By.ID, "target_shard_count")
    target.clear()
    target.send_keys("4")
    target.submit()
    wait_until(
        lambda: browser.find_elements(By.ID, "confirm"), deadline_s=PAGE_WAIT_S, what="confirm"
    )
    browser.find_element(By.ID, "confirm").click()
    wait_until(
        lambda: "UpdateShardCount accepted" in browser.page_source,
        deadline_s=PAGE_WAIT_S,
        what="UpdateShardCount",
    )
    wait_until(
        lambda: (
            api.describe_stream_summary(StreamName="made-in-browser")["StreamDescriptionSummary"][
                "OpenShardCount"
            ]
            == 4
        ),
        deadline_s=PAGE_WAIT_S,
        what="4 open shards",
    )

    browser.find_element(By.ID, "partition_key").send_keys("typed-key")
    browser.find_element(By.ID, "data").send_keys("typed in a browser")
    browser.find_element(By.ID, "put-record").click()
    wait_until(lambda: "Put a record on" in browser.page_source, deadline_s=PAGE_WAIT_S, what="put")

    browser.find_element(By.ID, "tag_key").send_keys("owner")
    browser.find_element(By.ID, "tag_value").send_keys("console")
    browser.find_element(By.ID, "tag_value").submit()
    wait_until(
        lambda: browser.find_elements(By.ID, "confirm"), deadline_s=PAGE_WAIT_S, what="confirm"
    )
    browser.find_element(By.ID, "confirm").click()
    wait_until(
        lambda: "AddTagsToStream accepted" in browser.page_source,
        deadline_s=PAGE_WAIT_S,
        what="tag",
    )
    tags = api.list_tags_for_stream(StreamName="made-in-browser")["Tags"]
    assert tags == [{"Key": "owner", "Value": "console"}]

    browser.find_element(By.ID, "delete-stream").click()
    wait_until(
        lambda: browser.find_elements(By.ID, "confirm"), deadline_s=PAGE_WAIT_S, what="confirm"
    )
    browser.find_element(By.ID, "confirm").click()
    wait_until(
        lambda: "DeleteStream accepted" in browser.page_source,
        deadline_s=PAGE_WAIT_S,
        what="delete",
    )
    wait_until(
        lambda: "made-in-browser" not in api.list_streams()["StreamNames"],
        deadline_s=PAGE_WAIT_S,
        what="the stream to be gone",
    )
    assert console_errors(browser) == []


def test_markup_in_a_record_shows_as_text(browser: Any, node: NodeProcess, api: Any) -> None:
    api.create_stream(StreamName="hostile", ShardCount=1)
    hostile = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
    api.put_record(StreamName="hostile", PartitionKey='<b id="bold">k</b>', Data=hostile.encode())
    open_page(browser, console(node, "/streams/hostile/records?go=1"))
    payload = browser.find_element(By.CSS_SELECTOR, ".record .payload")
    assert payload.text == hostile
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements(By.ID, "bold") == []
    assert browser.find_elements(By.CSS_SELECTOR, ".record img") == []


def test_live_tail_shows_a_put_record(browser: Any, node: NodeProcess, api: Any) -> None:
    api.create_stream(StreamName="tailed", ShardCount=2)
    open_page(browser, console(node, "/streams/tailed"))
    # The first poll fetches LATEST iterators; the poller then runs every 500 ms.
    wait_until(
        lambda: browser.execute_script(
            "const p = document.getElementById('tail-poller');"
            "return p !== null && p.getAttribute('hx-trigger') === 'every 500ms';"
        ),
        deadline_s=PAGE_WAIT_S,
        what="the live tail to start",
    )
    put_at = time.monotonic()
    api.put_record(StreamName="tailed", PartitionKey="live", Data=b"tail me")
    wait_until(
        lambda: "tail me" in browser.find_element(By.ID, "tail-records").text,
        deadline_s=PAGE_WAIT_S,
        what="the put record in the live tail",
    )
    seen_after_s = time.monotonic() - put_at
    print(f"live tail showed the record {seen_after_s:.2f} s after PutRecord returned")
    assert console_errors(browser) == []


@pytest.mark.cluster
def test_cluster_page_of_three_nodes(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, shots: Path
) -> None:
    from tests.cluster.helpers import wait_applied_everywhere, wait_formed
    from tests.support import ClusterProcesses

    cluster = ClusterProcesses(tmp_path_factory.mktemp("console-cluster"), size=3)
    cluster.start()
    try:
        wait_formed(cluster)
        first, second, third = cluster.nodes
        api = boto3.client(
            "kinesis",
            endpoint_url=f"http://127.0.0.1:{first.http_port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        api.create_stream(StreamName="replicated", ShardCount=3)
        # Each console shows its own node's metadata replica, which may trail node-1's.
        wait_applied_everywhere(cluster.endpoints)

        def overview_text() -> str:
            open_page(browser, console(third))
            return str(browser.find_element(By.ID, "main").text)

        wait_until(
            lambda: (
                "every open shard has a leader" in overview_text()
                and "every open shard has its full replica set" in overview_text()
            ),
            deadline_s=PAGE_WAIT_S,
            what="a healthy cluster on node-3's console",
        )
        rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        assert [row.find_element(By.TAG_NAME, "th").text.split()[0] for row in rows] == [
            "node-1",
            "node-2",
            "node-3",
        ]
        assert all("ACTIVE" in row.text for row in rows)
        assert sum("quorum leader" in row.text for row in rows) == 1
        # Every node told node-3's console its disk use (peer statistics, over HTTP).
        assert not any("no answer" in row.text for row in rows)
        assert all(row.find_elements(By.TAG_NAME, "meter") for row in rows)
        browser.save_screenshot(str(shots / "cluster.png"))
        wait_applied_everywhere(cluster.endpoints)  # node-2 has the leaders node-3 showed
        open_page(browser, console(second, "/streams/replicated"))
        shard_rows = browser.find_elements(By.CSS_SELECTOR, "table.shards tbody tr")
        assert len(shard_rows) == 3
        for row in shard_rows:  # every shard on all three nodes, led by one of them
            replicas = row.find_element(By.CSS_SELECTOR, "td.replicas").text.split(", ")
            assert sorted(replicas) == ["node-1", "node-2", "node-3"]
            assert row.find_element(By.CSS_SELECTOR, "td.leader").text in replicas
        assert console_errors(browser) == []

        first.kill()  # kill -9: node-3's console shows it fenced and its shards short a replica
        wait_until(
            lambda: "FENCED" in overview_text() and "2 of 3 replicas" in overview_text(),
            deadline_s=PAGE_WAIT_S,
            what="node-1 fenced and under-replicated shards on node-3's console",
        )
        assert "no answer" in overview_text()  # node-1's statistics, not the page, are missing
        browser.save_screenshot(str(shots / "cluster-node-down.png"))
        assert console_errors(browser) == []
        api.close()
    except BaseException:
        print(cluster.logs())  # why the cluster did not form or heal, with the failure
        raise
    finally:
        cluster.stop()


async def _put_video(endpoint: str, stream: str, data: bytes) -> int:
    """PutMedia of `data` in 4 KiB pieces; the number of PERSISTED acknowledgements."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    target = PutMediaTarget(
        endpoint=endpoint, stream_name=stream, producer_start_timestamp_s=time.time() - 60
    )
    acks = [ack async for ack in put_media(target, pieces())]
    return sum(1 for ack in acks if ack.event_type is AckEventType.PERSISTED)


def test_a_video_stream_plays_in_the_page(browser: Any, node: NodeProcess, shots: Path) -> None:
    """hls.js in Chromium plays the ON_DEMAND session of an uploaded H.264 video: the video
    element's clock advances, with no console error (a real decode, not just a playlist)."""
    endpoint = f"http://127.0.0.1:{node.http_port}"
    kvs = boto3.client(
        "kinesisvideo",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    kvs.create_stream(StreamName="lobby-cam", DataRetentionInHours=24, MediaType="video/h264")
    wait_until(
        lambda: kvs.describe_stream(StreamName="lobby-cam")["StreamInfo"]["Status"] == "ACTIVE",
        deadline_s=PAGE_WAIT_S,
        what="the video stream to become ACTIVE",
    )
    kvs.close()
    persisted = asyncio.run(_put_video(endpoint, "lobby-cam", h264_mkv(frames=100, fps=25)))
    assert persisted >= 1
    console_errors(browser)
    open_page(browser, console(node, "/video/lobby-cam"))
    browser.find_element(By.ID, "get-hls").click()
    wait_until(
        lambda: browser.find_elements(By.ID, "player"),
        deadline_s=PAGE_WAIT_S,
        what="the player page",
    )
    played = "return document.getElementById('player').currentTime"
    status = "return document.getElementById('player-status').textContent"
    try:
        wait_until(
            lambda: browser.execute_script(played) > 0.5,
            deadline_s=PAGE_WAIT_S,
            what="the video to play half a second",
        )
    except AssertionError as error:
        raise AssertionError(
            f"{error}; the player says: {browser.execute_script(status)}"
        ) from None
    browser.save_screenshot(str(shots / "video-player.png"))
    assert console_errors(browser) == []
