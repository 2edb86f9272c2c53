"""probing.connect: what the `probing` command does, from Python (a script, a notebook).

    import probing

    p = probing.connect(pid=4242)                      # or address="node7:9922", token="..."
    p.query("SELECT module, avg(duration) AS s FROM python.torch_trace GROUP BY module")
    p.eval("len(gc.get_objects())").value              # '123456' (the repr)
    p.backtrace()                                      # one dict per frame, innermost first
    p.config("probing.sample_rate", "0.5")
    p.tables()

Talks HTTP/1.1 + JSON to the recorder's control server (@probing-<pid>, or TCP with a token;
docs/protocol.md). SQL runs in the `probing` command itself (`query --format json`), which reads
the rings straight from shared memory: it answers while the target is hung. Errors raise
ProbingError with the message the command line prints.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess

__all__ = ["connect", "query", "Probe", "ProbingError", "RemoteError", "EvalResult"]


class ProbingError(Exception):
    """A failed operation; str() is the one-line message `probing` would print."""


class RemoteError(ProbingError):
    """Code run with Probe.eval raised in the target: type, message and its traceback."""

    def __init__(self, type_name, message, traceback):
        super().__init__("%s: %s" % (type_name, message))
        self.type = type_name
        self.message = message
        self.traceback = traceback


class EvalResult:
    """What Probe.eval returns: the repr of the final expression (None when there was none or
    it was None), and what the code printed."""

    def __init__(self, value, stdout, stderr, duration):
        self.value, self.stdout, self.stderr, self.duration = value, stdout, stderr, duration

    def __repr__(self):
        return "EvalResult(value=%r, stdout=%r, stderr=%r)" % (self.value, self.stdout, self.stderr)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, pid, timeout):
        super().__init__("localhost", timeout=timeout)
        self._pid = pid

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect("\0probing-%d" % self._pid)


def _data_dir():
    return os.environ.get("PROBING_DATA_DIR") or "/dev/shm/probing-%d" % os.getuid()


def _probing_command():
    """The `probing` program: $PROBING_BIN, beside this build's recorder libraries, or on PATH."""
    if os.environ.get("PROBING_BIN"):
        return os.environ["PROBING_BIN"]
    try:
        from probing._build_info import LIB_DIR
    except ImportError:
        LIB_DIR = None
    if LIB_DIR:
        for candidate in (os.path.join(LIB_DIR, "..", "bin", "probing"),         # build tree
                          os.path.join(LIB_DIR, "..", "..", "bin", "probing")):  # installed
            if os.access(candidate, os.X_OK):
                return os.path.normpath(candidate)
    found = shutil.which("probing")
    if found is None:
        raise ProbingError("the probing command is not found: set PROBING_BIN or put it on PATH")
    return found


def _rows(text):
    rows = json.loads(text) if text.strip() else []
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


class Probe:
    """A connection to one process's recorder. Make it with probing.connect()."""

    def __init__(self, pid=None, address=None, token=None, timeout=60):
        if (pid is None) == (address is None):
            raise ValueError("give pid=... or address='host:port', not both")
        self.pid = int(pid) if pid is not None else None
        self.address = address
        self.token = token if token is not None else os.environ.get("PROBING_AUTH_TOKEN")
        self.timeout = timeout
        if address is not None:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("address must be host:port, not %r" % (address,))
            self._host, self._port = host.strip("[]"), int(port)

    def __repr__(self):
        return "Probe(%s)" % ("pid=%d" % self.pid if self.pid is not None else repr(self.address))

    @property
    def target(self):
        return str(self.pid) if self.pid is not None else self.address

    # -- the control server ------------------------------------------------------------------

    def _gone(self):
        """The message for a local target that does not answer, as the command line words it."""
        pid = self.pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            d = os.path.join(_data_dir(), str(pid))
            if os.path.exists(os.path.join(d, "process.json")):
                return ("process %d is gone; what it recorded is still readable: "
                        "probing -t %s query ..., or probing-analyze %s" % (pid, d, d))
            return "no process %d" % pid
        except PermissionError:
            pass
        return "no recorder in process %d: run `probing -t %d inject` first" % (pid, pid)

    def _request(self, method, path, body=None, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        if self.pid is not None:
            conn = _UnixConnection(self.pid, timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers=headers)
            r = conn.getresponse()
            data = json.loads(r.read() or b"null")
        except (ConnectionRefusedError, FileNotFoundError):
            raise ProbingError(self._gone() if self.pid is not None else
                               "cannot reach %s: connection refused (is PROBING_PORT set, with "
                               "PROBING_AUTH_TOKEN, in the target?)" % self.address) from None
        except OSError as e:
            raise ProbingError("cannot reach %s: %s" % (self.target, e)) from None
        finally:
            conn.close()
        if r.status != 200:
            raise ProbingError(data.get("error", "HTTP %d" % r.status) if isinstance(data, dict)
                               else "HTTP %d" % r.status)
        return data

    def info(self):
        """What the recorder says about itself (pid, Python version, data_dir, ...)."""
        return self._request("GET", "/info")

    def eval(self, code, timeout=30):
        """Runs `code` in the target's __main__. Raises RemoteError if the code raised."""
        r = self._request("POST", "/eval", {"code": code, "timeout": timeout},
                          timeout=timeout + 10)
        if r.get("exception"):
            e = r["exception"]
            raise RemoteError(e["type"], e["message"], e["traceback"])
        return EvalResult(r.get("value"), r.get("stdout", ""), r.get("stderr", ""),
                          r.get("duration"))

    def backtrace(self, thread=None, locals=False, native=False):
        """Every thread's stack (or one thread's): one dict per frame, innermost first."""
        path = "/backtrace?x=1"
        if thread is not None:
            path += "&thread=%d" % thread
        if locals:
            path += "&locals=1"
        if native:
            path += "&native=1"
        out = []
        for t in self._request("GET", path)["threads"]:
            for f in t["frames"]:
                row = {"thread_id": t["thread_id"], "thread_name": t["thread_name"],
                       "holds_gil": t["holds_gil"]}
                row.update(f)
                out.append(row)
        return out

    def config(self, key=None, value=None):
        """All settings as {name: value}; one setting's value; or, with a value, sets it (the
        recorder validates it) and returns the value it now has."""
        if value is not None:
            if key is None:
                raise ValueError("config(key, value) needs the key")
            settings = self._request("POST", "/config", {"key": key, "value": str(value)})
        elif key is not None:
            settings = self._request("GET", "/config?key=" + key)
        else:
            settings = self._request("GET", "/config")
        values = {s["name"]: s["value"] for s in settings["settings"]}
        return values if key is None else values[key]

    def tables(self):
        """Every table SQL can name here: ours, and those the target registered."""
        rows = _rows(self._probing("tables"))
        names = rows["table"].tolist() if hasattr(rows, "columns") else [r["table"] for r in rows]
        return sorted(set(names))

    # -- SQL, through the probing command ------------------------------------------------------

    def _probing(self, *args):
        env = dict(os.environ)
        if self.token:
            env["PROBING_AUTH_TOKEN"] = self.token
        try:
            r = subprocess.run([_probing_command(), "-t", self.target, "--format", "json", *args],
                               capture_output=True, text=True, env=env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ProbingError("probing %s took more than %g s" % (args[0], self.timeout)) from None
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines()
            message = lines[-1] if lines else "probing %s failed (exit %d)" % (args[0], r.returncode)
            raise ProbingError(message[len("probing: "):] if message.startswith("probing: ")
                               else message)
        return r.stdout

    def query(self, sql):
        """Rows of one SQL statement: a pandas DataFrame when pandas is importable, else a list
        of dicts (integers, floats, strings and None kept as such)."""
        return _rows(self._probing("query", sql))


def connect(pid=None, address=None, token=None, timeout=60):
    """A Probe on a local process (pid=...) or a TCP one (address="host:port", token=...; the
    token defaults to $PROBING_AUTH_TOKEN). Checks that the recorder answers."""
    p = Probe(pid=pid, address=address, token=token, timeout=timeout)
    p.info()
    return p


def query(sql):
    """SQL on this very process's recorder (call it from the program being recorded)."""
    return Probe(pid=os.getpid()).query(sql)
