"""Secrets never reach what asyncguard writes: one scrubber for every text made from a call's
arguments or a source line (messages, log lines, JSON lines, collectors, summaries).

It works on the full text, before anything is abridged, so a cut never leaves half a secret:

- URLs lose their user information (``postgresql://u:pw@h/db`` -> ``postgresql://h/db``) and
  their query string and fragment (``?token=…`` -> ``?…``);
- ``name=value`` pairs whose name says secret (``password=``, ``passwd=``, ``token=``,
  ``auth=(...)``, ``sessionid=``...: libpq connection strings, keyword arguments, cookies, form
  bodies) keep the name only;
- mapping entries with such a key or a credential header (``'Authorization': ...``,
  ``'Proxy-Authorization'``, ``'Cookie'``, ``'Set-Cookie'``, ``'X-Api-Key'``) keep the key only;
- raw header lines (``Authorization: Bearer …`` in bytes sent on a socket) keep the name only;
- ``Bearer``/``Basic``/``Digest``/``Token`` credentials anywhere lose the credential.

Arguments that are secrets by position (``check_password(raw, encoded)``,
``SMTP.login(user, password)``) are never formatted at all: their hooks show ``…``.
"""

from __future__ import annotations

import re

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

HIDDEN = "…"

# words that say "the value is a secret", as a whole part of a name (db_password, X-Api-Key,
# Proxy-Authorization; not "bypass" or "author")
_SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|auth(?:orization)?|credentials?|"
    r"session(?:id)?|csrf\w*|cookie|private[_-]?key|access[_-]?key"
)
_NAME = (
    rf"(?:[\w-]*?[_-]|[a-z0-9]*?(?=pass(?:word|wd)|secret|token))?"  # PGPASSWORD, mytoken
    rf"(?:{_SECRET_WORDS})(?:[_-][\w-]*)?"
)

# a value as it appears in a repr or a connection string
_VALUE = (
    r"(?:b?'(?:[^'\\]|\\.)*'?"  # 'quoted' (an unterminated one runs to the end)
    r'|b?"(?:[^"\\]|\\.)*"?'
    r"|\((?:[^()]|\([^()]*\))*\)?"  # (a, tuple)
    r"|\[[^\]]*\]?"
    r"|\{[^}]*\}?"
    r"|[^\s,)}\]&;'\"]+)"
)

_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"@?#]*@")
_URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"?#]*)[?#][^\s'\"]*")
_MAPPING = re.compile(
    rf"""(?P<q>['"])(?P<key>{_NAME})(?P=q)(?P<sep>\s*:\s*){_VALUE}""", re.IGNORECASE
)
_PAIR = re.compile(rf"(?P<key>\b{_NAME}\s*=\s*){_VALUE}", re.IGNORECASE)
_HEADER_LINE = re.compile(
    # after a line break (``\\r\\n`` in a bytes repr) or at the start of a word
    r"(?P<key>(?:(?<=\\[rn])|(?<![\w-]))(?:(?:proxy-)?authorization|set-cookie|cookie|x-api-key))"
    r"(?P<sep>\s*:\s*)"
    r"(?:(?!\\r|\\n)[^\r\n'\"])+",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"\b(Bearer|Basic|Digest|Token|Negotiate)\s+[\w.~+/=-]{4,}", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by ``…`` (see the module docs)."""
    if not text:
        return text
    text = _URL_USERINFO.sub(r"\1", text)
    text = _URL_QUERY.sub(rf"\1?{HIDDEN}", text)
    text = _MAPPING.sub(rf"\g<q>\g<key>\g<q>\g<sep>'{HIDDEN}'", text)
    text = _PAIR.sub(rf"\g<key>{HIDDEN}", text)
    text = _HEADER_LINE.sub(rf"\g<key>\g<sep>{HIDDEN}", text)
    return _SCHEME.sub(rf"\1 {HIDDEN}", text)
