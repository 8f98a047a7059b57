"""The status endpoint: the live tree, health and metrics over HTTP, for people and monitors.

    GET /tree               the tree as JSON
    GET /tree?format=text   the tree as indented text
    GET /healthz            200 while the Prefect server answers; 503 with the reason otherwise;
                            a second line says the event mode (`events: stream`, ...), as the
                            EventListener's node in the tree says it; with work pools, a
                            line per pool says whether its type is served or refused
    GET /metrics            Prometheus text format

It binds 127.0.0.1 unless told otherwise: the tree names runs and queues, and nothing here
asks who is calling. It never shows the API key (the settings do not render it, see
`AgentSettings.__repr__`). One thread serves it (a greenlet under gevent).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import msgspec
import pykka
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from actors.status.text import events_line, pools_lines, render_tree

if TYPE_CHECKING:
    from actors.agent_handle import AgentHandle

log = logging.getLogger("prefect_actor_agent.status")


class StatusServer:
    def __init__(self, agent: AgentHandle, host: str = "127.0.0.1", port: int = 0) -> None:
        self.agent = agent
        handler = _handler_for(agent)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="status-server", daemon=True
        )

    def start(self) -> StatusServer:
        self._thread.start()
        log.info(
            "status endpoint on http://%s:%d (/tree, /healthz, /metrics)", self.host, self.port
        )
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(agent: AgentHandle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "prefect-actor-agent"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/tree":
                    tree = agent.tree(timeout=5.0)
                    if query.get("format") == ["text"]:
                        self._send(200, render_tree(tree).encode() + b"\n", "text/plain")
                    else:
                        self._send(200, msgspec.json.encode(tree), "application/json")
                elif url.path == "/healthz":
                    ok, reason = agent.health()
                    tree = agent.tree(timeout=5.0)
                    lines = [reason, events_line(tree), *pools_lines(tree)]
                    body = "".join(f"{line}\n" for line in lines if line is not None)
                    self._send(200 if ok else 503, body.encode(), "text/plain")
                elif url.path == "/metrics":
                    self._send(200, agent.metrics.exposition(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found: try /tree, /healthz or /metrics\n", "text/plain")
            except (pykka.ActorDeadError, pykka.Timeout) as exc:
                self._send(503, f"the agent did not answer: {exc!r}\n".encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
