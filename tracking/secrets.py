"""Keep credentials out of what dynsweep writes: MLflow params, tags, JSON artifacts, messages.

Two kinds of text are masked with ``***``:

- the password of a URI (``postgresql://user:PASSWORD@host/db``, ``https://u:PASSWORD@h``);
- the value of any environment variable whose name says it holds a credential (``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``, ``*API_KEY*``, ``*ACCESS_KEY*``, ...), wherever it appears,
  unless it is a plain word or a setting (``RAY_AUTH_MODE=disabled``, ``*_TOKEN_PATH``).

The sweep manifest beside the Tune experiment keeps the real URIs: ``resume`` needs them, and
that file stays on the user's disk.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|"
    r"AUTH|SESSION_?KEY|SIGNATURE|DSN",
    re.IGNORECASE,
)
_SETTING = re.compile(r"_(PATH|FILE|DIR|MODE|URL|HOST|PORT|TYPE|ENABLED|REGION|ID)$", re.I)
_URI_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]+):[^@/?#\s]+@")


def _looks_secret(value: str) -> bool:
    """Long enough, and not a plain word (``disabled``, ``true``) or a number."""
    if len(value) < 8 or value.isdigit():
        return False
    return not (value.isalpha() and value.islower()) or len(value) >= 24


def credential_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of credential-named environment variables, longest first."""
    env = os.environ if environ is None else environ
    found = {
        v for k, v in env.items() if _NAME.search(k) and not _SETTING.search(k) and _looks_secret(v)
    }
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with URI passwords and credential environment values (``secrets``: those of
    :func:`credential_values`, when already at hand) masked."""
    if not isinstance(text, str) or not text:
        return text
    text = _URI_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    for value in credential_values() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return text


def redact_obj(obj: Any, secrets: list[str] | None = None) -> Any:
    """:func:`redact` applied to every string of nested dicts and lists (keys included)."""
    secrets = credential_values() if secrets is None else secrets
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {redact(str(k), secrets): redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v, secrets) for v in obj]
    return obj


def redact_values(mapping: dict[str, Any], limit: int, secrets: list[str] | None = None) -> dict:
    """``{key: str(value)}`` masked and cut to ``limit`` characters (MLflow's param and tag
    value limits), as every param and tag dynsweep writes."""
    secrets = credential_values() if secrets is None else secrets
    return {k: redact(str(v), secrets)[:limit] for k, v in mapping.items()}
