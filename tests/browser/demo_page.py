"""The /demo page as a person uses it, in headless Chromium (Debian's), with the device simulator
as the phone. Run by tests/browser/run.sh against a running Hermod (the sample config, whose
demo-page-client is set):

    demo_page.py BASE_URL HERMOD_BINARY OUT_DIR

Enrols a device by reading the page's enrolment QR code from a screenshot (decoded with
zxing-cpp) and handing the link to `hermod device enrol`; then starts a login and reads the
animated QR code from two screenshots taken a second apart: they must hold two different
frames of the same command, and `hermod device claim` with each must be accepted (the second
claim of the same device is answered as the first, which it is only for a frame that verifies).
The verification code the device prints must be the one the page shows, and the page must then
show the login approved by the device's user. Every request the page makes stays on this Hermod.
"""

import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import zxingcpp
from PIL import Image
from playwright.sync_api import sync_playwright

BASE, HERMOD, OUT = sys.argv[1], sys.argv[2], Path(sys.argv[3])
HOST = urlsplit(BASE).netloc
CHROMIUM = "/usr/bin/chromium"
POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
FRAME = re.compile(r"hermod\.([0-9a-f-]{36})\.(0|[1-9][0-9]*)\.([0-9a-f]{64})")


def stays_here(url):
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or (parts.scheme == "http" and parts.netloc == HOST)


def decode(png):
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, f"expected one QR code in the screenshot, found {len(found)}"
    return found[0].text


def device(*args):
    done = subprocess.run([HERMOD, "device", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"hermod device {' '.join(args)}: {done.stdout} {done.stderr}"
    return done.stdout


def shown(page, element_id, after):
    """Waits until the image has drawn a code after the `after`-th, and returns its count."""
    page.wait_for_function(
        "([id, after]) => Number(document.getElementById(id).dataset.shown || 0) > after",
        arg=[element_id, after],
    )
    return int(page.get_attribute(f"#{element_id}", "data-shown"))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp()) / "device.json"
    requests, refused, problems = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1000, "height": 1400})
        context.set_default_timeout(30_000)

        def guard(route):
            if stays_here(route.request.url):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)

        response = page.goto(f"{BASE}/demo")
        assert response.status == 200, response.status
        assert response.headers["content-security-policy"] == POLICY, response.headers

        # Enrol: the QR code on the screen is the link the device enrols with.
        page.fill("#enrol-user", "dora")
        page.click("#enrol-start")
        shown(page, "enrol-qr", 0)
        link = decode(page.locator("#enrol-qr").screenshot(path=str(OUT / "demo-enrol-qr.png")))
        assert link.startswith("hermod://enrol?ms="), link
        assert link == page.text_content("#enrol-link"), (link, page.text_content("#enrol-link"))
        print(device("enrol", "--link", link, "--name", "demo phone", "--state", str(state)).strip())
        page.wait_for_function("() => document.getElementById('enrol-status').textContent.startsWith('enrolled')")

        # Log in: two screenshots a second apart hold two frames of one command.
        page.click("#login-start")
        count = shown(page, "login-qr", 0)
        first = decode(page.locator("#login-qr").screenshot(path=str(OUT / "demo-login-qr-1.png")))
        second, started = first, time.monotonic()
        while second == first:
            assert time.monotonic() - started < 10, "the QR code did not change within 10 s"
            count = shown(page, "login-qr", count)
            second = decode(page.locator("#login-qr").screenshot(path=str(OUT / "demo-login-qr-2.png")))
        a, b = FRAME.fullmatch(first), FRAME.fullmatch(second)
        assert a and b, (first, second)
        assert a.group(1) == b.group(1) and int(b.group(2)) > int(a.group(2)), (first, second)
        code = page.text_content("#login-code").strip()
        assert re.fullmatch(r"[0-9]{4}", code), code

        # The phone claims with the newer frame, then with the older: both verify (the second
        # claim of the same device is answered as the first).
        claimed = device("claim", "--frame", second, "--state", str(state))
        assert f"verification code {code}: Log in to the Hermod demo" in claimed, claimed
        again = device("claim", "--frame", first, "--state", str(state))
        assert f"verification code {code}" in again, again
        page.wait_for_function("() => document.getElementById('login-status').textContent === 'approved'")
        who = page.text_content("#login-who")
        assert "dora on dev_" in who, who
        page.screenshot(path=str(OUT / "demo.png"), full_page=True)
        browser.close()

    assert not refused, f"the page tried to leave the machine: {refused}"
    assert not problems, problems
    print(f"/demo: enrolled from the screen's QR code, two frames {a.group(2)} and {b.group(2)} of {a.group(1)}")
    print(f"/demo: the device saw verification code {code}, as the page showed; the page shows 'approved' {who}")
    print(f"/demo: {len(requests)} requests, all to {HOST}; screenshots in {OUT}")


if __name__ == "__main__":
    main()
