"""Take the README's screenshot of the results page with the demo's data (`make run` first).

    .venv/bin/python tools/web/screenshot.py [--user demo-ada] [--out docs/results-page.png]

Signs in to the local stack's page (http://127.0.0.1:8081/app/) with a token from its development
issuer, waits for a result and saves a full-page screenshot, in Debian's Chromium through Playwright.
"""

from __future__ import annotations

import argparse
import asyncio

from playwright.async_api import async_playwright

from circadia_dev.devstack.chromium import FLAGS, chromium_binary
from circadia_dev.devstack.stack import LocalStack
from circadia_dev.paths import PROJECT_ROOT


async def shoot(user: str, out: str) -> None:
    stack = LocalStack.default()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_binary(), args=list(FLAGS))
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(f"http://127.0.0.1:{stack.ports.fanout}/app/")
        await page.fill("#token", stack.issuer.mint(user))
        await page.click("button[type=submit]")
        await page.wait_for_selector("#offsets:not(:empty)", timeout=30_000)
        await page.wait_for_timeout(500)  # the charts' first frame
        await page.screenshot(path=out, full_page=True)
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--user", default="demo-ada")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "results-page.png"))
    args = parser.parse_args()
    asyncio.run(shoot(args.user, args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
