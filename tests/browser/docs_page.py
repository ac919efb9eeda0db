"""The /docs page as a person sees it, in headless Chromium (Debian's, never a browser build of
Playwright's own). Run by tests/browser/run.sh against a running Hermod:

    docs_page.py BASE_URL SCREENSHOT.png

Checks that the page renders every operation of /openapi.json (among them a few named here),
that every request the page makes goes to the Hermod under test (any other is recorded, refused
before it leaves the machine, and fails the test), that the Content-Security-Policy the page is
served with blocks nothing Swagger UI needs and no script throws, and that "Try it out" then
"Execute" on GET /ms/time shows a 200 with a JSON body. Saves a screenshot of the whole page,
and one of the GET /ms/time block beside it (SCREENSHOT-ms-time.png).
"""

import json
import sys
import urllib.request
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

BASE, SCREENSHOT = sys.argv[1], sys.argv[2]
HOST = urlsplit(BASE).netloc
CHROMIUM = "/usr/bin/chromium"
POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
# Operations a reader of the README looks for first.
NAMED = {
    "POST /command/{type}",
    "GET /command/{id}",
    "DELETE /command/{id}",
    "GET /ms/mailbox",
    "POST /ms/enrol",
    "GET /ms/time",
    "GET /admin/tenants",
    "POST /admin/tenants",
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documented_operations():
    with urllib.request.urlopen(f"{BASE}/openapi.json", timeout=10) as answer:
        document = json.load(answer)
    return {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item if method in METHODS
    }


def stays_here(url):
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or (parts.scheme == "http" and parts.netloc == HOST)


def main():
    expected = documented_operations()
    missing_from_document = NAMED - expected
    assert not missing_from_document, f"not in /openapi.json: {sorted(missing_from_document)}"

    requests, refused, problems = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)

        def guard(route):
            url = route.request.url
            if stays_here(url):
                route.continue_()
            else:
                refused.append(url)
                route.abort()

        context.route("**/*", guard)
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None,
        )

        response = page.goto(f"{BASE}/docs")
        assert response.status == 200, response.status
        assert response.headers["content-type"].startswith("text/html"), response.headers
        assert response.headers["content-security-policy"] == POLICY, response.headers
        assert "were not built in" not in page.content(), (
            "this hermod was built without swagger-ui-dist: run `npm ci` in the repository root, then build it again"
        )

        # Rendered: one block per operation and tag, so at least as many blocks as operations.
        page.wait_for_function("n => document.querySelectorAll('.opblock').length >= n", arg=len(expected))
        shown = set(
            page.eval_on_selector_all(
                ".opblock",
                """blocks => blocks.map(b =>
                    b.querySelector('.opblock-summary-method').textContent.trim() + ' ' +
                    b.querySelector('.opblock-summary-path').getAttribute('data-path'))""",
            )
        )
        assert shown == expected, f"shown but not documented: {sorted(shown - expected)}; documented but not shown: {sorted(expected - shown)}"
        assert NAMED <= shown
        title = page.locator(".information-container .title").first.inner_text()
        assert title.startswith("Hermod"), title

        # Try it out on GET /ms/time (no credential needed) through the page's own controls.
        block = page.locator(".opblock.opblock-get", has=page.locator('.opblock-summary-path[data-path="/ms/time"]'))
        block.locator(".opblock-summary").first.click()
        block.locator("button.try-out__btn").click()
        block.locator("button.execute").click()
        live = block.locator(".live-responses-table .response")
        status = live.locator(".response-col_status").first.inner_text().strip()
        assert status == "200", status
        body = json.loads(live.locator(".response-col_description pre.microlight").first.inner_text())
        assert isinstance(body.get("server_time"), int), body
        request_url = block.locator(".request-url pre").inner_text().strip()
        assert request_url == f"{BASE}/ms/time", request_url

        page.screenshot(path=SCREENSHOT, full_page=True)
        block.screenshot(path=SCREENSHOT.replace(".png", "-ms-time.png"))
        browser.close()

    assert not refused, f"the page tried to leave the machine: {refused}"
    assert all(stays_here(url) for url in requests), requests
    assert f"{BASE}/docs/swagger-ui-bundle.js" in requests and f"{BASE}/openapi.json" in requests, requests
    assert f"{BASE}/ms/time" in requests, requests
    assert not problems, problems

    print(f"/docs: {len(shown)} operations shown, as in /openapi.json (among them {', '.join(sorted(NAMED))})")
    print(f"/docs: {len(requests)} requests, all to {HOST}: {', '.join(sorted({urlsplit(u).path for u in requests}))}")
    print(f"/docs: Try it out on GET /ms/time answered 200 with {json.dumps(body)}")
    print(f"/docs: screenshots in {SCREENSHOT} and {SCREENSHOT.replace('.png', '-ms-time.png')}")


if __name__ == "__main__":
    main()
