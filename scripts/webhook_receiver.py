#!/usr/bin/env python3
"""A webhook receiver on 127.0.0.1 for lop's tests, demo and benchmark.

Prints its port on the first line of stdout, then serves until killed. Behaviour by path:
  /ok                 200
  /flaky/N            500 for the first N requests of each webhook-id, then 200
  /slow/S             sleeps S seconds, then 200
  /slowfirst/S        the first request of each webhook-id sleeps S seconds; later ones answer 200 at once
  /redirect           301 to /ok
  /gone               410
  /ratelimit/S        the first request of each webhook-id gets 429 with Retry-After: S, later ones 200
GET /_log returns every request received so far (logged on arrival) as JSON: path, id, timestamp, signature, content_type,
user_agent, body, status and received_at (seconds since the epoch); GET /_stats counts requests and distinct ids.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
log = []
seen = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY each response waits for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        with lock:
            if self.path == "/_log":
                body = json.dumps(log).encode()
            elif self.path == "/_stats":
                body = json.dumps({"requests": len(log), "distinct_ids": len({r["id"] for r in log})}).encode()
            else:
                body = None
        if body is None:
            return self.reply(404)
        self.reply(200, body, [("Content-Type", "application/json")])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received = time.time()
        parts = self.path.strip("/").split("/")
        kind, argument = parts[0], (float(parts[1]) if len(parts) > 1 else 0)
        ident = self.headers.get("webhook-id", "")
        with lock:
            count = seen.get((self.path, ident), 0)
            seen[(self.path, ident)] = count + 1
        status, headers, wait = 200, [], 0
        if kind == "flaky" and count < argument:
            status = 500
        elif kind == "slow" or (kind == "slowfirst" and count == 0):
            wait = argument
        elif kind == "redirect":
            status, headers = 301, [("Location", "/ok")]
        elif kind == "gone":
            status = 410
        elif kind == "ratelimit" and count == 0:
            status, headers = 429, [("Retry-After", str(int(argument)))]
        elif kind not in ("ok", "flaky", "slowfirst", "ratelimit"):
            status = 404
        with lock:
            log.append({"path": self.path, "id": ident, "timestamp": self.headers.get("webhook-timestamp"),
                        "signature": self.headers.get("webhook-signature"), "content_type": self.headers.get("content-type"),
                        "user_agent": self.headers.get("user-agent"), "body": body.decode("utf-8", "replace"),
                        "status": status, "received_at": received})
        if wait:
            time.sleep(wait)
        try:
            self.reply(status, b'{"ok": true}' if status == 200 else b"", headers)
        except (BrokenPipeError, ConnectionResetError):
            pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
