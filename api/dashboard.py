"""GET /dashboard: a page that shows the live top ads, clicks per minute and the pipeline's health.

The page is static HTML, CSS and JavaScript served from this package (api/templates,
api/static): no CDN, so it works on a machine without internet. In the browser it asks the
same API endpoints as any client (popular_ads, per_minute, status) with the key it was opened
with, so it never shows more than that key may read. The key comes in the URL's fragment
(`/dashboard#key=...`, which `make demo` prints): a browser never sends a fragment to a
server, and the page moves the key into the tab's sessionStorage and removes it from the
address bar. Opened without one, it asks for it.
"""

from flask import Blueprint
from flask import render_template

from adclick.contract import DEVICES

bp = Blueprint("dashboard", __name__, static_folder="static",
               static_url_path="/dashboard/static", template_folder="templates")
# Only this origin's own files and API; no inline script, no third party.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
          " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.get("/dashboard")
def dashboard():
    """The dashboard page (its data comes from the API, with the key given to the page)."""
    page = render_template("dashboard.html", devices=DEVICES)
    return page, 200, {"Content-Security-Policy": POLICY, "Cache-Control": "no-store"}
