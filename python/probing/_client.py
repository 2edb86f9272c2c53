"""probing.connect and probing.open: what the `probing` command does, from Python (a script, a
notebook).

    import probing

    p = probing.connect(pid=4242)                      # or address="node7:9922", token="..."
    p.query("SELECT module, avg(duration) AS s FROM python.torch_trace GROUP BY module")
    p.eval("len(gc.get_objects())").value              # '123456' (the repr)
    p.backtrace()                                      # one dict per frame, innermost first
    p.config("probing.sample_rate", "0.5")
    p.tables()

    r = probing.open("run.ptrace")                     # a recording, or a ring directory
    r.query("SELECT func, count(*) AS n FROM python.stacks WHERE depth = 0 GROUP BY func")

Every call runs the `probing` command (`--format json`), which opens the target as a session:
the same resolution of pids, paths and addresses, the same protocol and the same errors as the
command line, by construction. SQL reads the rings straight from shared memory (or a remote
recorder's segments), so it answers while the target is hung. Errors raise ProbingError with
the message the command line prints.
"""
import json
import os
import shutil
import subprocess

__all__ = ["connect", "open", "query", "Probe", "Cluster", "ProbingError", "RemoteError",
           "EvalResult"]


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


def _frame(rows):
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


class Probe:
    """One target, as the command line reaches it: a local process (pid), a recorder on another
    host (address "host:port" with a token), or a recording or ring directory (path; only SQL
    and the tables answer there). Make it with probing.connect() or probing.open()."""

    def __init__(self, pid=None, address=None, token=None, timeout=60, path=None):
        if sum(x is not None for x in (pid, address, path)) != 1:
            raise ValueError("give one of pid=..., address='host:port' or path=..., not both")
        self.pid = int(pid) if pid is not None else None
        self.address = address
        self.path = os.fspath(path) if path is not None else None
        self.token = token if token is not None else os.environ.get("PROBING_AUTH_TOKEN")
        self.timeout = timeout
        if address is not None:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("address must be host:port, not %r" % (address,))

    def __repr__(self):
        if self.pid is not None:
            return "Probe(pid=%d)" % self.pid
        return "Probe(%r)" % (self.address if self.address is not None else self.path)

    @property
    def target(self):
        if self.pid is not None:
            return str(self.pid)
        return self.address if self.address is not None else self.path

    # -- the probing command -----------------------------------------------------------------

    def _run(self, args, wait):
        env = dict(os.environ)
        env.pop("PROBING_AUTH_TOKEN", None)
        if self.token:
            env["PROBING_AUTH_TOKEN"] = self.token
        argv = [_probing_command(), "-t", self.target, "--format", "json",
                "--timeout", str(self.timeout), *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=wait)
        except subprocess.TimeoutExpired:
            raise ProbingError("probing %s took more than %g s" % (args[0], wait)) from None

    @staticmethod
    def _error(r, command):
        lines = r.stderr.strip().splitlines()
        message = lines[-1] if lines else "probing %s failed (exit %d)" % (command, r.returncode)
        return ProbingError(message[len("probing: "):] if message.startswith("probing: ")
                            else message)

    def _rows(self, *args, wait=None):
        r = self._run(args, wait if wait is not None else self.timeout + 10)
        if r.returncode != 0:
            raise self._error(r, args[0])
        return json.loads(r.stdout) if r.stdout.strip() else []

    # -- what the command line does ------------------------------------------------------------

    def info(self):
        """What the recorder says about itself (pid, Python version, data_dir, ...)."""
        out = {}
        for row in self._rows("info"):
            value = row["value"]
            if isinstance(value, str) and value.startswith("{"):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            out[row["key"]] = value
        return out

    def eval(self, code, timeout=30):
        """Runs `code` in the target's __main__. Raises RemoteError if the code raised."""
        r = self._run(("eval", code, "--timeout", str(timeout)), timeout + self.timeout + 10)
        rows = []
        if r.stdout.strip():
            try:
                rows = json.loads(r.stdout)
            except ValueError:
                rows = []
        if not rows:
            raise self._error(r, "eval")
        row = rows[0]
        if row.get("exception_type") is not None:
            raise RemoteError(row["exception_type"], row["exception_message"], row["traceback"])
        return EvalResult(row["value"], row["stdout"], row["stderr"], row["duration"])

    def backtrace(self, thread=None, locals=False, native=False):
        """Every thread's stack (or one thread's): one dict per frame, innermost first."""
        args = ["backtrace"]
        if thread is not None:
            args += ["--thread", str(thread)]
        if locals:
            args.append("--locals")
        if native:
            args.append("--native")
        out = []
        for row in self._rows(*args):
            row["holds_gil"] = bool(row["holds_gil"])
            if row.get("locals") is not None:
                row["locals"] = json.loads(row["locals"])
            elif not locals:
                row.pop("locals", None)
            out.append(row)
        return out

    def config(self, key=None, value=None):
        """All settings as {name: value}; one setting's value; or, with a value, sets it (the
        recorder validates it) and returns the value it now has."""
        if value is not None:
            if key is None:
                raise ValueError("config(key, value) needs the key")
            rows = self._rows("config", "%s=%s" % (key, value))
        elif key is not None:
            rows = self._rows("config", key)
        else:
            rows = self._rows("config")
        values = {r["name"]: r["value"] for r in rows}
        return values if key is None else values[key]

    def tables(self):
        """Every table SQL can name here: ours, and those the target registered."""
        return sorted({r["table"] for r in self._rows("tables")})

    def query(self, sql):
        """Rows of one SQL statement: a pandas DataFrame when pandas is importable, else a list
        of dicts (integers, floats, strings and None kept as such). `cluster.<table>` names the
        table of every rank of this target's job (with rank, host and pid columns)."""
        return _frame(self._rows("query", sql))

    def cluster(self):
        """Every rank of the distributed job this target is a rank of (docs/distributed.md)."""
        return Cluster(self)


class Cluster:
    """The ranks of one job, reached through any one of them (Probe.cluster()). Every call asks
    every rank in parallel from here; ranks that do not answer are named, never left out."""

    def __init__(self, probe):
        self._probe = probe

    def __repr__(self):
        return "Cluster(via %r)" % (self._probe,)

    def list(self):
        """One row per rank: rank, local_rank, host, pid, address, state, step,
        clock_offset_ms and, for a rank that did not answer, why."""
        r = self._probe._run(("cluster", "list"), self._probe.timeout + 30)
        if not r.stdout.strip():
            raise Probe._error(r, "cluster list")
        return _frame(json.loads(r.stdout))  # a rank not running is a row saying so

    def query(self, sql):
        """SQL over cluster.<table> (and this rank's own python.* tables)."""
        return self._probe.query(sql)

    def backtrace(self):
        """Every rank's stacks, ranks with the same stack in one group (the odd ones first):
        one row per frame with group, ranks, rank_count, thread_name, depth, func, file, lineno."""
        r = self._probe._run(("cluster", "backtrace"), self._probe.timeout + 30)
        if not r.stdout.strip():
            raise Probe._error(r, "cluster backtrace")
        return _frame(json.loads(r.stdout))

    def record(self, directory, duration):
        """One recording per rank in `directory`, with a manifest: probing.open(directory)
        reads it back. Returns the manifest's path."""
        r = self._probe._run(("cluster", "record", "-o", os.fspath(directory), "--duration",
                              str(duration)), duration + self._probe.timeout + 60)
        if r.returncode != 0 and not os.path.exists(os.path.join(directory, "manifest.json")):
            raise Probe._error(r, "cluster record")
        return os.path.join(directory, "manifest.json")


def connect(pid=None, address=None, token=None, timeout=60):
    """A Probe on a local process (pid=...) or a TCP one (address="host:port", token=...; the
    token defaults to $PROBING_AUTH_TOKEN). Checks that the recorder answers."""
    p = Probe(pid=pid, address=address, token=token, timeout=timeout)
    p.info()
    return p


def open(path, timeout=60):  # noqa: A001 (probing.open, as a notebook writes it)
    """A Probe on a recording (.ptrace), or the ring directory a process left: query() and
    tables() answer; what needs a live process raises ProbingError saying so."""
    p = Probe(path=path, timeout=timeout)
    if not os.path.exists(p.path):
        raise ProbingError("%s: no such file or directory" % p.path)
    return p


def query(sql):
    """SQL on this very process's recorder (call it from the program being recorded)."""
    return Probe(pid=os.getpid()).query(sql)
