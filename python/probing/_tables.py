"""Custom tables registered in the target process and served by the recorder's control server.

    import probing

    @probing.table("my_data")
    def my_data():
        return [{"key": "value", "n": 1}]

Wire format of one table (GET /tables/<name>, docs/protocol.md)::

    {"columns": [{"name": "key", "type": "TEXT"}, {"name": "n", "type": "INTEGER"}],
     "rows": [["value", 1]]}

Rows may be a list of dicts, a list of dataclass instances, or a pandas DataFrame. Columns are
the union of the keys in first-seen order. A column whose values (NULLs aside) are all int or
bool is INTEGER; all int/float, REAL; anything else TEXT (values become str()).
"""

import dataclasses

REGISTRY = {}


def table(name):
    """Registers the decorated function, returning rows, as table `python.<name>`."""
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError("table name must be letters, digits and _: %r" % (name,))

    def register(fn):
        REGISTRY[name] = fn
        return fn

    return register


def _records(result):
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # a pandas DataFrame
        return result.to_dict("records")
    out = []
    for row in result:
        if dataclasses.is_dataclass(row) and not isinstance(row, type):
            out.append(dataclasses.asdict(row))
        elif isinstance(row, dict):
            out.append(row)
        else:
            raise TypeError("a table row must be a dict or a dataclass instance, not %s"
                            % type(row).__name__)
    return out


def _column_type(values):
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, bool}:
        return "INTEGER"
    if kinds and kinds <= {int, float, bool}:
        return "REAL"
    return "TEXT"


def rows(name):
    """The wire form of one table: calls its function now."""
    records = _records(REGISTRY[name]())
    names = []
    for r in records:
        for k in r:
            if k not in names:
                names.append(k)
    columns = []
    for n in names:
        columns.append({"name": str(n), "type": _column_type([r.get(n) for r in records])})
    out = []
    for r in records:
        row = []
        for c in columns:
            v = r.get(c["name"])
            if v is None:
                row.append(None)
            elif c["type"] == "INTEGER":
                row.append(int(v))
            elif c["type"] == "REAL":
                row.append(float(v))
            else:
                row.append(str(v))
        out.append(row)
    return {"columns": columns, "rows": out}
