"""Secrets out of everything the project shows: logs, events, metadata, lineage, spans, reports.

One rule for every URL shown anywhere: :func:`redact_uri` drops the userinfo (a user name can be a
token too) and masks the values of query parameters that carry credentials. :func:`redact_text`
applies it to every URL in free text (error messages quote URLs) and also masks the literal values
of secret-looking environment variables. :class:`RedactingFilter` does the same to log records as
a second line of defence. Plain Python, no imports beyond the standard library.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are credentials: tokens, keys, signatures (AWS/GCS/Azure signed URLs).
_SENSITIVE_PARAM = re.compile(
    r"(token|secret|passw|pwd|api[-_]?key|apikey|access[-_]?key|auth|credential|signature|^sig$|^key$"
    r"|^code$|session|^x-amz-(credential|signature|security-token)$|^x-goog-(credential|signature)$)",
    re.IGNORECASE,
)
# Environment variables whose values are secrets whatever they look like.
_SENSITIVE_ENV = re.compile(
    r"(TOKEN|SECRET|PASSW|API_?KEY|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY|AUTH|HEADERS|WEBHOOK)", re.I
)
# Shorter values would mask ordinary words and numbers.
_MIN_SECRET_LENGTH = 6
# scheme://... up to whitespace, quotes or a closing bracket.
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>()\[\]{}`]+", re.IGNORECASE)
# A query parameter quoted without its URL (requests: "Max retries exceeded with url: /p?token=x").
_PARAM_IN_TEXT = re.compile(r"([?&;])([^=&\s?#;'\"]+)=([^&\s#;'\"]+)")


def redact_uri(uri: str) -> str:
    """``http://user:tok@host:5000/p?token=x&a=1`` -> ``http://host:5000/p?token=***&a=1``."""
    head, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    authority = authority.rpartition("@")[2]
    tail, hash_, fragment = tail.partition("#")
    tail, qmark, query = tail.partition("?")
    query = _mask_query(query) if qmark else ""
    fragment = _mask_query(fragment) if "=" in fragment else fragment
    return f"{head}://{authority}{tail}{qmark}{query}{hash_}{fragment}"


def _mask_query(query: str) -> str:
    out = []
    for piece in query.split("&"):
        name, sep, _value = piece.partition("=")
        out.append(f"{name}={MASK}" if sep and _SENSITIVE_PARAM.search(unquote(name)) else piece)
    return "&".join(out)


def uri_secrets(uri: str) -> list[str]:
    """The secret pieces of one URI: its user, password and sensitive query values (decoded too)."""
    found: list[str] = []
    try:
        parts = urlsplit(uri.strip())
    except ValueError:
        return found
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        found += [user, password, unquote(user), unquote(password)]
    for source in (parts.query, parts.fragment):
        for name, value in parse_qsl(source, keep_blank_values=False):
            if _SENSITIVE_PARAM.search(name):
                found.append(value)
        for piece in source.split("&"):
            name, sep, value = piece.partition("=")
            if sep and _SENSITIVE_PARAM.search(unquote(name)):
                found.append(value)
    return [s for s in dict.fromkeys(found) if len(s) >= _MIN_SECRET_LENGTH]


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named variables, and the secret parts of every URL-valued variable."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        value = value.strip()
        if not value:
            continue
        if _SENSITIVE_ENV.search(name) and len(value) >= _MIN_SECRET_LENGTH:
            found.append(value)
        if "://" in value:
            for url in _URL_IN_TEXT.findall(value):
                found += uri_secrets(url)
    # Longest first: a secret that contains another is masked whole.
    return sorted(set(found), key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Every URL in ``text`` redacted, then every known secret value masked."""
    if not text:
        return text
    text = _URL_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
    text = _PARAM_IN_TEXT.sub(_mask_param, text)
    for secret in environment_secrets() if secrets is None else secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    return f"{sep}{name}={MASK}" if _SENSITIVE_PARAM.search(unquote(name)) else match.group(0)


class RedactingFilter(logging.Filter):
    """Redacts a record's message (arguments merged in) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's business, not ours
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def redact_value(value: object) -> object:
    """Strings redacted inside nested dicts/lists/tuples; anything else returned unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def strip_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """(url without userinfo, (user, password) decoded, or None): for clients that need auth apart."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (unquote(user), unquote(password))
