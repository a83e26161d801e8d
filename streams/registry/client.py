"""HTTP client of a Confluent-compatible schema registry (Confluent's REST API, v7 paths).

Owns the requests and the mapping of their failures onto RegistryError; must not encode
records (streams.serde) nor talk to Kafka. Works with Confluent Schema Registry, Karapace
and Apicurio's ccompat API (base URL ``http://HOST:8080/apis/ccompat/v7``).
Standard library only (urllib), so the registry needs no extra dependency.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import SerdeError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "Compatibility",
    "CompatibilityVerdict",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaIncompatible",
]

DEFAULT_TIMEOUT_S = 10.0
#: Reading a schema by id waits at most this long: a worker asks on its poll thread, and a
#: registry that does not answer a GET by id (served from its memory) in 2 s is as good as
#: down there: the partition holds and retries (README "Schema registry").
READ_TIMEOUT_S = 2.0
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Confluent's error codes that mean "no such subject / version / schema".
_NOT_FOUND_CODES = {40401, 40402, 40403}
# Besides 5xx, the statuses that mean "not now" rather than "no": request timeout, rate limit.
_TRANSIENT_STATUSES = {408, 429}

Compatibility = Literal[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]


class RegistryError(SerdeError):
    """The registry could not be reached or refused a request (the message says which)."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer (connection refused, timed out) or answered that it
    cannot now (HTTP 5xx, 408, 429): the same request may succeed later. Its other
    refusals (an unknown id: 404 / 40403, a bad request) are plain RegistryErrors."""

    retriable = True


class SchemaIncompatible(RegistryError):
    """A schema breaks its subject's compatibility rule; names the subject and the reasons."""

    def __init__(self, subject: str, reasons: tuple[str, ...]) -> None:
        self.subject = subject
        self.reasons = reasons
        why = "; ".join(reasons) or "the registry gave no reason"
        super().__init__(f"schema for subject {subject!r} is incompatible: {why}")


@dataclass(frozen=True, slots=True)
class CompatibilityVerdict:
    compatible: bool
    reasons: tuple[str, ...] = ()


class RegistryClient:
    """One registry's REST API. Blocking calls, each bounded by ``timeout_s``; thread-safe
    (no state besides the base URL). Raises RegistryError, never urllib's exceptions."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s  # schema_text only (a reader's poll thread)

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id. The
        registry refuses an incompatible schema: SchemaIncompatible."""
        body = self._call("POST", f"/subjects/{_quote(subject)}/versions", {"schema": schema})
        return int(body["id"])

    def lookup(self, subject: str, schema: str) -> int | None:
        """The id of ``schema`` if it is registered under ``subject``, else None."""
        try:
            body = self._call("POST", f"/subjects/{_quote(subject)}", {"schema": schema})
        except _NotFound:
            return None
        return int(body["id"])

    def schema_text(self, schema_id: int) -> str:
        """The schema registered under ``schema_id``; RegistryError if the registry says it
        has none, RegistryUnavailable if it cannot answer within ``read_timeout_s``."""
        try:
            body = self._call(
                "GET", f"/schemas/ids/{int(schema_id)}", timeout_s=self.read_timeout_s
            )
        except _NotFound as exc:
            raise RegistryError(
                f"schema id {schema_id} is unknown to the registry at {self.base_url}"
            ) from exc
        return str(body["schema"])

    def subjects(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self._call("GET", "/subjects"))

    def check_compatibility(self, subject: str, schema: str) -> CompatibilityVerdict:
        """Is ``schema`` compatible with ``subject``'s latest version under the subject's
        rule? A subject with no versions accepts anything."""
        path = f"/compatibility/subjects/{_quote(subject)}/versions/latest?verbose=true"
        try:
            body = self._call("POST", path, {"schema": schema})
        except _NotFound:
            return CompatibilityVerdict(True)
        reasons = tuple(str(m) for m in body.get("messages") or ())
        return CompatibilityVerdict(bool(body.get("is_compatible")), reasons)

    def compatibility(self, subject: str | None = None) -> str:
        """The rule for ``subject`` (falling back to the global one), or the global rule."""
        if subject is not None:
            try:
                body = self._call("GET", f"/config/{_quote(subject)}?defaultToGlobal=true")
                return str(body.get("compatibilityLevel") or body.get("compatibility"))
            except _NotFound:
                pass
        body = self._call("GET", "/config")
        return str(body.get("compatibilityLevel") or body.get("compatibility"))

    def set_compatibility(self, level: Compatibility, subject: str | None = None) -> None:
        path = "/config" if subject is None else f"/config/{_quote(subject)}"
        self._call("PUT", path, {"compatibility": level})

    def _call(
        self, method: str, path: str, payload: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", f"{_CONTENT_TYPE}, application/json")
        if data is not None:
            request.add_header("Content-Type", _CONTENT_TYPE)
        try:
            timeout = self.timeout_s if timeout_s is None else timeout_s
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _refusal(method, url, exc) from exc
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailable(
                f"schema registry at {self.base_url} unreachable ({method} {path}): {reason}; "
                "check STREAMS_SCHEMA_REGISTRY_URL / --schema-registry"
            ) from exc
        except ValueError as exc:
            raise RegistryError(
                f"schema registry at {self.base_url} answered {method} {path} with non-JSON"
            ) from exc


class _NotFound(RegistryError):
    pass


def _refusal(method: str, url: str, exc: urllib.error.HTTPError) -> RegistryError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    code = body.get("error_code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if exc.code == 404 or code in _NOT_FOUND_CODES:
        return _NotFound(f"{method} {url}: not found ({code}: {message})")
    if exc.code == 409:
        subject = urllib.parse.unquote(url.split("/subjects/", 1)[-1].split("/", 1)[0])
        return SchemaIncompatible(subject, (str(message or "the registry refused it (409)"),))
    if exc.code >= 500 or exc.code in _TRANSIENT_STATUSES:
        return RegistryUnavailable(
            f"schema registry at {url} cannot answer {method} now: HTTP {exc.code} {message}"
        )
    return RegistryError(f"schema registry refused {method} {url}: HTTP {exc.code} {message}")


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")
