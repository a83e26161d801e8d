"""An in-memory stand-in for a Confluent-compatible schema registry, served over real HTTP
on loopback, for tests: no real registry could be run here (see README "Schema registry").

Owns the subset of Confluent's REST API that streams.registry calls (register, lookup,
schema by id, compatibility check, config) and a BACKWARD compatibility check of Avro
records; must not be used outside tests. Ids are per schema text, as in Confluent's
registry: the same schema under two subjects has one id.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PRIMITIVE_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


class RegistryDouble:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[str, int] = {}  # canonical text -> id
        self.texts: dict[int, str] = {}
        self.versions: dict[str, list[int]] = {}  # subject -> ids, oldest first
        self.level = "BACKWARD"
        self.requests: list[str] = []
        self.url = ""

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parsed = urllib.parse.urlsplit(path)
        parts = [urllib.parse.unquote(p) for p in parsed.path.strip("/").split("/")]
        with self.lock:
            self.requests.append(f"{method} {parsed.path}")
            if parts == ["subjects"] and method == "GET":
                return 200, sorted(self.versions)
            if len(parts) == 3 and parts[0] == "schemas" and parts[1] == "ids":
                text = self.texts.get(int(parts[2]))
                if text is None:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                return 200, {"schema": text}
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                return self._register(parts[1], body["schema"])
            if len(parts) == 2 and parts[0] == "subjects" and method == "POST":
                return self._lookup(parts[1], body["schema"])
            if len(parts) == 5 and parts[0] == "compatibility":
                return self._check(parts[2], body["schema"])
            if parts[0] == "config":
                if method == "PUT":
                    self.level = body["compatibility"]
                return 200, {"compatibilityLevel": self.level}
        return 404, {"error_code": 404, "message": f"no route {method} {path}"}

    def _key(self, text: str) -> str:
        return json.dumps(json.loads(text), sort_keys=True)

    def _lookup(self, subject: str, text: str) -> tuple[int, Any]:
        schema_id = self.ids.get(self._key(text))
        if subject not in self.versions:
            return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
        if schema_id is None or schema_id not in self.versions[subject]:
            return 404, {"error_code": 40403, "message": "Schema not found"}
        version = self.versions[subject].index(schema_id) + 1
        return 200, {"subject": subject, "id": schema_id, "version": version, "schema": text}

    def _register(self, subject: str, text: str) -> tuple[int, Any]:
        key = self._key(text)
        existing = self.versions.setdefault(subject, [])
        schema_id = self.ids.get(key)
        if schema_id is not None and schema_id in existing:
            return 200, {"id": schema_id}
        if existing:
            problems = _backward_problems(json.loads(text), json.loads(self.texts[existing[-1]]))
            if problems and self.level != "NONE":
                return 409, {
                    "error_code": 409,
                    "message": f"Schema being registered is incompatible: {'; '.join(problems)}",
                }
        if schema_id is None:
            schema_id = len(self.texts) + 1
            self.ids[key] = schema_id
            self.texts[schema_id] = text
        existing.append(schema_id)
        return 200, {"id": schema_id}

    def _check(self, subject: str, text: str) -> tuple[int, Any]:
        existing = self.versions.get(subject)
        if not existing:
            return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
        problems = _backward_problems(json.loads(text), json.loads(self.texts[existing[-1]]))
        ok = not problems or self.level == "NONE"
        return 200, {"is_compatible": ok, "messages": [] if ok else problems}


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema.get("type"))
    if isinstance(schema, list):
        return "union"
    return str(schema)


def _readable(reader: Any, writer: Any, where: str) -> list[str]:
    """Why data written with `writer` cannot be read with `reader` (empty: it can)."""
    if isinstance(writer, list):
        return [p for w in writer for p in _readable(reader, w, where)]
    if isinstance(reader, list):
        if any(not _readable(r, writer, where) for r in reader):
            return []
        return [f"TYPE_MISMATCH at {where}: reader union lacks {_type_name(writer)}"]
    r, w = _type_name(reader), _type_name(writer)
    if isinstance(reader, dict) and isinstance(writer, dict) and r == w == "record":
        return _record_problems(reader, writer, where)
    if r == w == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"MISSING_ENUM_SYMBOLS at {where}: {sorted(missing)}"]
        return []
    if r == w == "array":
        return _readable(reader["items"], writer["items"], f"{where}/items")
    if r == w == "map":
        return _readable(reader["values"], writer["values"], f"{where}/values")
    if r in _PRIMITIVE_PROMOTIONS.get(w, {w}):
        return []
    return [f"TYPE_MISMATCH at {where}: reader {r}, writer {w}"]


def _record_problems(reader: dict[str, Any], writer: dict[str, Any], where: str) -> list[str]:
    written = {f["name"]: f for f in writer["fields"]}
    problems: list[str] = []
    for index, field in enumerate(reader["fields"]):
        at = f"{where}/fields/{index}"
        old = written.get(field["name"])
        if old is None:
            if "default" not in field:
                problems.append(
                    f"READER_FIELD_MISSING_DEFAULT_VALUE at {at}: {field['name']} has no default"
                )
            continue
        problems.extend(_readable(field["type"], old["type"], f"{at}/type"))
    return problems


def _backward_problems(new: Any, old: Any) -> list[str]:
    return _readable(new, old, "")


@contextmanager
def running_registry(
    given: RegistryDouble | None = None, port: int = 0
) -> Iterator[RegistryDouble]:
    """A RegistryDouble listening on 127.0.0.1 (``port``, 0: a free one) until the block
    ends; pass ``given`` (a double) and its old port to bring a stopped one back, ids kept."""
    double = RegistryDouble() if given is None else given

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = double.handle(method, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    double.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
