"""The demo page: its HTTP endpoints (bad uploads included) and the page in a real browser."""

import base64
import http.client
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from test_best_checkpoint import shared_trained_workdir

from pix2pix_jax import demo


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def server(workdir):
    """The demo of the tiny trained run, on a free loopback port, in a thread."""
    httpd = demo.make_server(demo.load_model(workdir), "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[:2]
    httpd.shutdown()
    httpd.server_close()


def request(address, method, path, body=None, headers=None):
    """(status, headers, body) of one request on a fresh connection."""
    connection = http.client.HTTPConnection(*address, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def encode(image, kind="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind)
    return buffer.getvalue()


def decode_data_url(url):
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))))


def drawing(height=32, width=32):
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (0, 0, 255)  # facade
    image[4:12, 4:12] = (0, 85, 255)  # a window
    return image


def test_the_page_and_its_description(server):
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<canvas id="sketch"' in page
    status, _, body = request(server, "GET", "/info.json")
    info = json.loads(body)
    assert status == 200 and (info["height"], info["width"]) == (32, 32)
    assert info["palette"]["kind"] == "labels"  # synthetic facades, labels -> photo
    names = [c["name"] for c in info["palette"]["colours"]]
    assert len(names) == 12 and names[:3] == ["background", "facade", "window"]
    assert info["mode"] == "paper" and info["max_samples"] == demo.MAX_SAMPLES
    assert {"l1", "psnr", "ssim", "step"} <= set(info["metrics"])
    status, headers, grid = request(server, "GET", "/examples.png")
    assert status == 200 and grid.startswith(b"\x89PNG")
    status, _, body = request(server, "GET", "/../config.json")
    assert status == 404 and "no such page" in json.loads(body)["error"]


def test_translate_returns_k_samples_at_the_uploads_size(server):
    status, _, body = request(
        server, "POST", "/translate?samples=3", encode(drawing()), {"Content-Type": "image/png"}
    )
    assert status == 200, body
    reply = json.loads(body)
    outputs = [decode_data_url(u) for u in reply["outputs"]]
    assert len(outputs) == 3 and all(o.shape == (32, 32, 3) for o in outputs)
    assert not np.array_equal(outputs[0], outputs[1])  # the paper's noise
    photo = drawing(40, 24)  # any size, as a JPEG: translated at its own size
    status, _, body = request(
        server, "POST", "/translate", encode(photo, "JPEG"), {"Content-Type": "image/jpeg"}
    )
    assert status == 200 and decode_data_url(json.loads(body)["outputs"][0]).shape == (40, 24, 3)


def bad_requests():
    png = encode(drawing())
    huge = encode(np.zeros((8, demo.MAX_SIDE + 1, 3), np.uint8))
    return [
        ("/translate", png, {"Content-Type": "text/plain"}, 415, "image/png or image/jpeg"),
        ("/translate", b"GIF89a" + png, {"Content-Type": "image/png"}, 400, "not a image/png"),
        ("/translate", png[:60], {"Content-Type": "image/png"}, 400, "the upload"),
        ("/translate", huge, {"Content-Type": "image/png"}, 413, "at most"),
        ("/translate?samples=9", png, {"Content-Type": "image/png"}, 400, "samples must be"),
        ("/translate?samples=x", png, {"Content-Type": "image/png"}, 400, "integer"),
        ("/elsewhere", png, {"Content-Type": "image/png"}, 404, "no such endpoint"),
        (
            "/translate",
            b"",
            {"Content-Type": "image/png", "Content-Length": str(demo.MAX_UPLOAD_BYTES + 1)},
            413,
            "at most",
        ),
    ]


def test_bad_uploads_get_a_4xx_with_a_message_and_the_server_keeps_serving(server):
    for path, body, headers, want, message in bad_requests():
        status, _, reply = request(server, "POST", path, body, headers)
        assert status == want, (path, headers, reply)
        assert message in json.loads(reply)["error"], reply
    connection = http.client.HTTPConnection(*server, timeout=60)
    connection.putrequest("POST", "/translate")  # no Content-Length
    connection.putheader("Content-Type", "image/png")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    status, _, _ = request(
        server, "POST", "/translate", encode(drawing()), {"Content-Type": "image/png"}
    )
    assert status == 200


def browser():
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,800"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path)
    return webdriver.Chrome(options=options, service=service)


def test_a_person_draws_presses_translate_and_sees_an_output(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(f"http://{server[0]}:{server[1]}/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        driver.find_element(By.ID, "live").click()  # off: only the button translates
        canvas = driver.find_element(By.ID, "sketch")
        driver.find_element(By.XPATH, "//div[@id='palette']/button[contains(., 'shop')]").click()
        assert driver.find_element(By.ID, "tool").get_attribute("value") == "rect"
        rectangle = ActionChains(driver).move_to_element_with_offset(canvas, -90, 60)
        rectangle.click_and_hold().move_by_offset(150, 0).move_by_offset(0, 40).release().perform()
        driver.find_element(By.XPATH, "//div[@id='palette']/button[contains(., 'door')]").click()
        driver.find_element(By.XPATH, "//select[@id='tool']/option[@value='pen']").click()
        stroke = ActionChains(driver).move_to_element_with_offset(canvas, -20, -100)
        stroke.click_and_hold().move_by_offset(30, 120).release().perform()
        drawn = driver.execute_script(
            "const c = document.getElementById('sketch');"
            "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
        )
        colours = {tuple(drawn[i : i + 3]) for i in range(0, len(drawn), 4)}
        assert {(170, 0, 0), (0, 170, 255), (0, 0, 255)} <= colours  # shop, door, facade
        driver.find_element(By.ID, "translate").click()
        wait.until(lambda d: d.find_elements(By.ID, "output-0"))
        output = driver.find_element(By.ID, "output-0")
        wait.until(lambda d: d.execute_script("return arguments[0].complete", output))
        size = driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", output
        )
        assert size == [32, 32]
        image = decode_data_url(output.get_attribute("src"))
        assert image.shape == (32, 32, 3) and image.std() > 1.0  # not blank
        assert "ms" in driver.find_element(By.ID, "status").text
        driver.save_screenshot(str(tmp_path / "demo.png"))
        assert (tmp_path / "demo.png").stat().st_size > 1000
    finally:
        driver.quit()


def test_the_command_serves_on_loopback_until_interrupted(workdir):
    command = [sys.executable, "-m", "pix2pix_jax.demo", f"--workdir={workdir}", "--port=0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, process.kill)  # a server that never starts fails the test
    watchdog.start()
    try:
        line = process.stdout.readline()  # printed once the model is loaded and compiled
        match = re.search(r"on http://(127\.0\.0\.1):(\d+)/", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        status, _, body = request((match[1], int(match[2])), "GET", "/info.json")
        assert status == 200 and json.loads(body)["step"] == 4
    finally:
        watchdog.cancel()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
