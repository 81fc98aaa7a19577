"""Credentials kept out of everything shown or logged: URL masking and text redaction.

`mask_url` is the one way a URL with credentials is shown (`redis://:***@host:6379/0`,
`rediss://user:***@host`, `unix://:***@/run/redis.sock`, `unix:///run/redis.sock?password=***`,
`https://api.marketaux.com/v1/news/all?api_token=***`). `url_secrets` names the values a URL
carries, so a process can register them with its log redaction (services.base.logs) like the
secrets of SECRET_KEYS. `redact` does both to any text: the registered values, then whatever
still looks like a credential in a URL.

Pure functions, standard library only: every process imports this, the CLI included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
#: Query parameters whose value is a credential wherever they appear (MarketAux's api_token,
#: redis-py's password=, OAuth-style access_token, ...).
SECRET_PARAMS = ("password", "api_token", "access_token", "token", "api_key", "apikey", "secret", "auth")
#: Shorter values are not registered: masking "abc" everywhere would garble logs, not protect.
MIN_SECRET_LENGTH = 4

# The value ends where a query does, or where text around a URL usually resumes: `)` `,` `;`.
_PARAM_RE = re.compile(
    r"(?P<key>(?<![A-Za-z0-9_])(?:" + "|".join(SECRET_PARAMS) + r")=)(?P<value>[^&\s\"'#<>),;\]}]+)",
    re.IGNORECASE,
)
# scheme://[user]:password@ : the password never holds '@', whitespace or quotes (a URL would
# percent-encode them); a bare userinfo without ':' is masked whole (some clients take it as the
# password).
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:@/\"'<>]*)(?P<colon>:?)(?P<pw>[^\s@/\"'<>]*)@"
)


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, user, colon, pw = match["scheme"], match["user"], match["colon"], match["pw"]
    if colon:
        return f"{scheme}{user}:{MASK}@"
    return f"{scheme}{MASK}@" if user or pw else match[0]


def mask_url(url: str) -> str:
    """The URL as it may be shown: password (or bare userinfo) and secret query values as ***."""
    if "@" in url and "://" in url:  # the cheap tests first: most log text has neither
        url = _USERINFO_RE.sub(_mask_userinfo, url)
    if "=" in url:
        url = _PARAM_RE.sub(rf"\g<key>{MASK}", url)
    return url


def mask_identifier(value: str | None) -> str | None:
    """An identifier that is configured as a secret (IG's account id) as it may be shown: its
    last 4 characters, enough to tell accounts apart (`***C123`)."""
    if not value:
        return value
    return MASK + value[-4:] if len(value) > 4 else MASK


def url_secrets(url: str) -> list[str]:
    """The credential values a URL carries (as written and percent-decoded), for redaction."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if key.lower() in SECRET_PARAMS:
            found.append(value)
    found += [unquote(v) for v in found]
    return sorted({v for v in found if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def secret_list(secrets: Iterable[str]) -> tuple[str, ...]:
    """Registered values worth replacing, longest first (a secret inside a longer one goes last)."""
    return tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the registered secret values and without credentials in any URL in it."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_url(text)
