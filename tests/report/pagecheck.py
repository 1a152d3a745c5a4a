"""Static checks of rendered pages: every tag and attribute, every script block, every URL."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

URL_ATTRS = {"src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data", "background", "ping"}
CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE)


class Page(HTMLParser):
    """Collects tags, attributes, script bodies and text of one HTML document."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None
        self._buf: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in, self._buf = tag, []
            self._attrs = dict(attrs)

    def handle_endtag(self, tag):
        if tag == self._in:
            body = "".join(self._buf)
            if tag == "script":
                self.scripts.append((self._attrs, body))
            else:
                self.styles.append(body)
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._buf.append(data)
        else:
            self.text.append(data)


def is_local_url(url: str) -> bool:
    """``#anchor``, ``data:`` or a relative link to another report page; nothing with a scheme or host."""
    u = url.strip()
    if u.startswith("#") or u.lower().startswith("data:"):
        return True
    if u.startswith(("/", "\\")) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", u):
        return False  # absolute path, //host, http:, https:, file:, javascript:, ...
    return u.endswith(".html") or ".html#" in u


def urls(html: str) -> list[str]:
    """Every URL the page could load or link to, from attributes, inline styles and CSS."""
    page = Page(html)
    found = []
    for _, attrs in page.tags:
        for name, value in attrs.items():
            if value is None:
                continue
            if name.lower() in URL_ATTRS:
                found.append(value)
            if name.lower() == "style" or name.lower() in ("fill", "stroke", "mask", "filter", "clip-path"):
                found += [m.group(2) for m in CSS_URL.finditer(value)]
    for css in page.styles:
        found += [m.group(2) for m in CSS_URL.finditer(css)]
        assert "@import" not in css
    return found


def json_blocks(html: str) -> list[object]:
    return [json.loads(body) for attrs, body in Page(html).scripts if attrs.get("type") == "application/json"]
