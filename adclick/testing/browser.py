"""A real headless Chromium (Debian's chromium and chromium-driver) driven through Selenium.

Used by the dashboard's test and to take the screenshot in docs/. The page is read through
the DOM the way a person sees it: the table's cells, the chart's SVG shapes.
"""

import json
import shutil
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import Select

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def available():
    """Why no browser can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (Debian packages chromium and chromium-driver)"
    return None


def chromium(width=1280, height=900):
    """A headless Chromium; quit() it when done."""
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Dashboard:
    """The dashboard page open in a browser."""

    def __init__(self, driver, base, key):
        self.driver = driver
        driver.get(f"{base}/dashboard#key={key}")

    def _script(self, text):
        return self.driver.execute_script(text)

    def updated(self):
        """(refresh count, the filters it drew with) of the page's last complete refresh."""
        body = self._script("return [document.body.dataset.updated || null,"
                            " document.body.dataset.filters || null]")
        return (None if body[0] is None else int(body[0]),
                None if body[1] is None else json.loads(body[1]))

    def wait_for_refresh(self, after=None, filters=None, timeout=30):
        """Wait for a refresh later than `after` (drawn with `filters`, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count, drawn = self.updated()
            if count is not None and (after is None or count > after) and (
                    filters is None or drawn == filters):
                return count
            time.sleep(0.2)
        raise AssertionError(f"the page did not refresh: {self.updated()}, error: "
                             f"{self.error()!r}")

    def error(self):
        return self._script("const e = document.getElementById('error');"
                            " return e.hidden ? '' : e.textContent")

    def top_ads(self):
        """The top-ads table as shown: [(ad_id, clicks)]."""
        rows = self._script(
            "return [...document.querySelectorAll('#top-ads tbody tr[data-ad-id]')]"
            ".map(r => [...r.cells].map(c => c.textContent))")
        return [(ad, int(clicks.replace(",", ""))) for _rank, ad, clicks in rows]

    def chart(self, shape):
        """[(minute, clicks)] of the chart's bars ('rect.all') or the chosen ad ('circle.ad')."""
        return [(m, int(c)) for m, c in self._script(
            f"return [...document.querySelectorAll('#chart {shape}')]"
            ".map(s => [s.dataset.minute, s.dataset.clicks])")]

    def late_minutes(self):
        """The not-counted-on-time table: [(minute HH:MM, corrections, too late, dead)]."""
        rows = self._script(
            "return [...document.querySelectorAll('#late-minutes tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))")
        return [(minute, *map(int, counts)) for minute, *counts in rows]

    def text(self, element_id):
        return self._script(f"return document.getElementById('{element_id}').textContent")

    def choose(self, select_id, value):
        Select(self.driver.find_element("id", select_id)).select_by_value(value)

    def screenshot(self, path):
        self.driver.save_screenshot(str(path))
