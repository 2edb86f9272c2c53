"""A minimal client for the recorder's control server, for the tests: HTTP/1.1 + JSON over
@probing-<pid>, or TCP with a token; statuses are returned, never raised (probing.connect raises)."""
import http.client
import json
import socket


class _UnixConnection(http.client.HTTPConnection):
    """HTTP on the recorder's abstract socket @probing-<pid>."""

    def __init__(self, pid, timeout):
        super().__init__("localhost", timeout=timeout)
        self._pid = pid

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect("\0probing-%d" % self._pid)


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
