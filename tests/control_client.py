"""A minimal client for the recorder's control server, for the tests: HTTP/1.1 + JSON over
@probing-<pid>, or TCP with a token; statuses are returned, never raised (probing.connect raises)."""
import http.client
import json
import os
import sys

# The transport is the product's own (python/probing/_client.py, standard library only); this
# module adds what tests need on top: every status returned, never raised.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from probing._client import _UnixConnection  # noqa: E402


def request(pid=None, method="GET", path="/info", body=None, timeout=30, port=None, token=None):
    """(status, decoded JSON). pid: the Unix socket; port (+ token): TCP on localhost."""
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) if port
            else _UnixConnection(pid, timeout))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def wait_for_server(pid, timeout=30):
    import time

    deadline = time.time() + timeout
    while True:
        try:
            return request(pid, "GET", "/info", timeout=5)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
