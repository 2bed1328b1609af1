#!/usr/bin/python3
"""Fake AWS credential endpoints for the tests, on a free 127.0.0.1 port: EC2 instance metadata
(IMDSv2: a PUT for a session token first, and the token required after) and an ECS container
endpoint (/ecs, checking the Authorization header when one is given). Both hand out the
credentials named on the command line, expiring LIFETIME seconds after each request (without a
session token: moto checks tokens against its own STS, and these are its IAM user's key). GET /stats returns how many credential documents each kind served.

    fake_metadata.py ACCESS_KEY SECRET LIFETIME_S [ECS_AUTHORIZATION]

Prints "READY <port>", serves until stdin closes or SIGTERM."""
import datetime
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

key, secret, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3])
ecs_auth = sys.argv[4] if len(sys.argv) > 4 else ""
counts = {"imds": 0, "ecs": 0, "imds_token": 0, "imds_refused": 0}
lock = threading.Lock()
TOKEN = "imds-session-token"
ROLE = "surf-test-role"


def document(kind):
    with lock:
        counts[kind] += 1
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
    return {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key, "SecretAccessKey": secret,
            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            with lock:
                counts["imds_token"] += 1
            return self.send(200, TOKEN)
        self.send(400, "bad token request")

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.send(200, json.dumps(counts), "application/json")
        if self.path == "/ecs":
            if ecs_auth and self.headers.get("Authorization") != ecs_auth:
                return self.send(403, "bad authorization")
            return self.send(200, json.dumps(document("ecs")), "application/json")
        if self.path.startswith("/latest/meta-data/iam/security-credentials/"):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:  # IMDSv2 only
                with lock:
                    counts["imds_refused"] += 1
                return self.send(401, "")
            role = self.path[len("/latest/meta-data/iam/security-credentials/"):]
            if role == "":
                return self.send(200, ROLE)
            if role == ROLE:
                return self.send(200, json.dumps(document("imds")), "application/json")
        self.send(404, "not found")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"READY {server.server_address[1]}", flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
stop.wait()
server.shutdown()
