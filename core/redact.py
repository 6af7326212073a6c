"""Keep credentials out of logs, params, tags and error messages.

    python -c "from core.redact import mask_uri; print(mask_uri('postgresql://kiln:s3cret@db:5432/mlflow'))"

`mask_uri` hides the password of a `scheme://user:password@host/...` URI; `redact` does that to every URI in a
text and also removes each known secret value (an S3 secret key, a basic-auth password) wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# user:password@ inside any scheme://... run of non-space characters
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s/]*)@")


def mask_uri(uri: str) -> str:
    """`postgresql://kiln:secret@db/mlflow` -> `postgresql://kiln:***@db/mlflow`; other URIs unchanged."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every URI password masked and every non-empty value of `secrets` replaced by ***."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
