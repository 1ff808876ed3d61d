"""The results page in a real browser: Debian's Chromium, driven by Playwright, against the real stack.

The page signs in with a pasted token, renders the result a real upload produced, updates when the
next upload's result arrives, and survives a restart of the fan-out gateway by resuming: the offsets
it shows have neither a repeat nor a gap. An expired token and a token from another issuer get a
clear message. Throughout: no console error, no Content-Security-Policy violation, and no request
to anything but the gateway.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.chromium import FLAGS, chromium_binary
from circadia_dev.devstack.stack import LocalStack
from tests.e2e.conftest import post, upload_body

RUN = uuid.uuid4().hex[:6]
MORNING = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=1)
# collects CSP violations in the page (an init script runs before the page's own, outside its policy)
WATCH_CSP = ("window.__violations = []; document.addEventListener('securitypolicyviolation', "
             "(e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_binary(), args=list(FLAGS))
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page with its console errors, page errors, CSP violations and foreign requests recorded."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        async def only_the_gateway(route, request) -> None:  # noqa: ANN001  (Playwright's callback types)
            if request.url.startswith(origin):
                await route.continue_()
            else:
                self.foreign.append(request.url)
                await route.abort()

        self._route = only_the_gateway

    async def start(self, origin: str) -> None:
        await self.page.add_init_script(WATCH_CSP)
        await self.page.route("**/*", self._route)
        await self.page.goto(f"{origin}/app/")

    async def sign_in(self, token: str) -> None:
        await self.page.fill("#token", token)
        await self.page.click("button[type=submit]")

    async def offsets(self) -> list[str]:
        text = await self.page.get_attribute("#offsets", "data-offsets") or ""
        return text.split()

    async def wait_offsets(self, count: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(found := await self.offsets()) < count:
            assert time.monotonic() < deadline, f"the page shows {found}, waited for {count}"
            await asyncio.sleep(0.2)
        return found

    async def clean(self) -> None:
        violations = await self.page.evaluate("window.__violations")
        assert violations == [], violations
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign


async def test_the_page_follows_a_user_live_and_resumes_after_a_restart(stack: LocalStack, browser: Browser,
                                                                       tmp_path: Path) -> None:
    origin = f"http://127.0.0.1:{stack.ports.fanout}"
    user = f"page-{RUN}"
    page = Watched(await browser.new_page(), origin)
    await page.start(origin)
    assert "circadia token" in await page.page.inner_text("#sign-in")
    first = upload_body([20] * 30, start=MORNING)
    assert (await post(stack, user, first)).status_code == 202
    await page.sign_in(stack.issuer.mint(user))
    await page.page.wait_for_selector(f"text=Live: {user}", timeout=30_000)
    (shown,) = await page.wait_offsets(1)
    assert await page.page.locator("#steps-chart canvas").count() == 1
    assert "Interdaily stability" in await page.page.inner_text("#rhythm")
    assert "at least 3 are needed" in await page.page.inner_text("#refused")  # too little: refused, with why
    assert "token" not in page.page.url and "eyJ" not in page.page.url

    second = upload_body([30] * 30, start=MORNING + timedelta(hours=1))
    assert (await post(stack, user, second)).status_code == 202
    offsets = await page.wait_offsets(2)

    before_restart = len(page.errors)
    await asyncio.to_thread(stack.process("fanout-gateway").stop)  # reconnect hints, then 1001
    third = upload_body([40] * 30, start=MORNING + timedelta(hours=2))
    assert (await post(stack, user, third)).status_code == 202  # its result waits in Kafka
    await asyncio.to_thread(stack.start_service, "fanout-gateway")
    offsets = await page.wait_offsets(3, timeout=90)
    # while the gateway was down, Chromium logs each refused reconnect by itself; the page handles them
    refused = re.compile(rf"WebSocket connection to 'ws://127\.0\.0\.1:{stack.ports.fanout}/v1/stream' failed")
    page.errors[before_restart:] = [e for e in page.errors[before_restart:] if not refused.match(e)]
    numbers = [int(o.split(":")[1]) for o in offsets]
    assert len(set(offsets)) == len(offsets) and numbers == sorted(numbers), offsets  # no repeat
    assert numbers[-1] == numbers[-2] + 1 and numbers[1] == numbers[0] + 1, offsets  # no gap: one partition
    assert offsets[0] == shown
    await page.page.screenshot(path=str(tmp_path / "results-page.png"), full_page=True)
    await page.clean()
    await page.page.close()


async def test_an_expired_or_foreign_token_gets_a_clear_message(stack: LocalStack, browser: Browser,
                                                               tmp_path: Path) -> None:
    origin = f"http://127.0.0.1:{stack.ports.fanout}"
    foreign = DevIssuer.ensure(tmp_path / "another-issuer", stack.issuer.project_id)
    for token in (stack.issuer.mint(f"page-expired-{RUN}", ttl=60, now=time.time() - 3600),
                  foreign.mint(f"page-foreign-{RUN}")):
        page = Watched(await browser.new_page(), origin)
        await page.start(origin)
        await page.sign_in(token)
        problem = page.page.locator("#problem")
        await problem.wait_for(state="visible", timeout=15_000)
        assert "refused or has expired" in await problem.inner_text()
        assert await page.page.is_visible("#sign-in-form")
        await page.clean()
        await page.page.close()
