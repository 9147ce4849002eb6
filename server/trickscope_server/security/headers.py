"""Response headers that keep the dashboard and the API out of other sites' frames and scripts."""

from __future__ import annotations

# Plotly and Swagger UI set inline styles, hence 'unsafe-inline' for styles only; scripts,
# fetches and the live stream stay same-origin. blob: lets Plotly's "download plot" work.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Everything that is not a page (JSON, scripts, the event stream) renders nothing.
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"

COMMON: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def with_security_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``raw`` response headers plus the common ones and a CSP fitting the content type."""
    present = {name.lower() for name, _ in raw}
    out = list(raw)
    out += [(name, value) for name, value in COMMON if name not in present]
    if b"content-security-policy" not in present:
        content_type = next((v for n, v in raw if n.lower() == b"content-type"), b"")
        is_page = content_type.lower().startswith(b"text/html")
        out.append((b"content-security-policy", (PAGE_CSP if is_page else OTHER_CSP).encode()))
    return out
