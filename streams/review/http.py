"""The review server's HTTP API (README "Human review"): reviewers list pending reviews
and decide them.

    GET  /v1/workflows/{W}/reviews            {"reviews": [...], "stages": [...]}
    POST /v1/workflows/{W}/reviews/{run_id}   {"decision": "approve"|"decline",
                                               "note": "...", "reviewer": "..."}

Owns the wire shape of those two endpoints (JSON in, JSON out, status codes). Must not
decide anything itself: the desk (streams.review.desk) does. Stdlib HTTP on threads: a
reviewer's request rate is a person's, and this keeps the worker's dependencies unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streams.errors import StreamsError
from streams.kafka.client_config import ClientConfig
from streams.review.desk import ReviewDesk, ReviewNotPending
from streams.review.records import ReviewEntry
from streams.topology import Topology

__all__ = ["ReviewServer", "entry_json"]

log = logging.getLogger(__name__)

_MAX_BODY = 65_536
_PATH = re.compile(r"^/v1/workflows/(?P<workflow>[^/]+)/reviews(?:/(?P<run_id>[^/]+))?/?$")


def entry_json(entry: ReviewEntry) -> dict[str, Any]:
    return {
        "run_id": entry.run_id,
        "stage": entry.stage,
        "state": entry.state,
        "tenant": entry.tenant,
        "lane": entry.lane,
        "admitted_at_ms": entry.admitted_at_ms,
        "deadline_ms": entry.deadline_ms,
        "decided_at_ms": entry.decided_at_ms,
        "decision": entry.decision,
        "note": entry.note,
        "reviewer": entry.reviewer,
        # The run's payload as text (UTF-8 JSON by convention), replaced where it is not.
        "payload": entry.payload.decode("utf-8", errors="replace"),
    }


class ReviewServer:
    """ReviewServer(topology, client, host=, port=0).start(); `url`; close()."""

    def __init__(
        self, topology: Topology, client: ClientConfig, *, host: str = "127.0.0.1", port: int = 8095
    ) -> None:
        self.topology = topology
        self.desk = ReviewDesk(topology, client)
        desk, workflow = self.desk, topology.workflow

        class Handler(_Handler):
            pass

        Handler.desk, Handler.workflow = desk, workflow
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="review-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ReviewServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.desk.close()


class _Handler(BaseHTTPRequestHandler):
    desk: ReviewDesk
    workflow: str

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("review http: " + format, *args)

    def do_GET(self) -> None:
        match = self._route()
        if match is None:
            return
        if match["run_id"] is not None:
            entry = self.desk.get(match["run_id"])
            if entry is None:
                self._send(404, {"error": f"no review of run {match['run_id']}"})
            else:
                self._send(200, entry_json(entry))
            return
        self._send(
            200,
            {
                "reviews": [entry_json(e) for e in self.desk.pending()],
                "stages": [
                    {
                        "stage": s.stage,
                        "pending": s.pending,
                        "max_pending": s.max_pending,
                        "oldest_pending_age_s": round(s.oldest_pending_age_s, 3),
                        "clear_rate_per_s": s.clear_rate_per_s,
                    }
                    for s in self.desk.stats()
                ],
            },
        )

    def do_POST(self) -> None:
        match = self._route()
        if match is None:
            return
        run_id = match["run_id"]
        if run_id is None:
            self._send(405, {"error": "POST a decision to /v1/workflows/W/reviews/{run_id}"})
            return
        body = self._body()
        if body is None:
            return
        decision, note, reviewer = body.get("decision"), body.get("note"), body.get("reviewer")
        if not isinstance(note, str | None) or not isinstance(reviewer, str):
            self._send(422, {"error": "note must be a string or null; reviewer a string"})
            return
        try:
            entry = self.desk.decide(run_id, str(decision), note=note, reviewer=reviewer)
        except ValueError as exc:
            self._send(422, {"error": str(exc)})
        except ReviewNotPending as exc:
            self._send(409, {"error": str(exc)})
        except StreamsError as exc:
            self._send(503, {"error": str(exc)})
        else:
            self._send(200, entry_json(entry))

    def _route(self) -> dict[str, str | None] | None:
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None or match["workflow"] != self.workflow:
            self._send(404, {"error": f"not found: {self.path}"})
            return None
        return match.groupdict()

    def _body(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            self._send(400, {"error": f"a JSON body of 1-{_MAX_BODY} bytes is required"})
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._send(400, {"error": "the body is not JSON"})
            return None
        if not isinstance(body, dict):
            self._send(422, {"error": "the body must be a JSON object"})
            return None
        return body

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
