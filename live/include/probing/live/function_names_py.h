// The Python source that names the function around a line of a source file (qualified:
// Class.method, outer.<locals>.inner; <module> outside any function), from the file's syntax
// tree. Shared by `probing memory --top` (run in the target by eval) and the recorder's
// allocation snapshots (python.allocations), so both name a site alike. Defines
// functions_of(filename, cache) and function_at(filename, line, cache); imports ast and
// linecache only when first called. `cache` is a dict the caller keeps ({filename: spans}).
//
//   std::string code = std::string(my_code) + probing::live::kFunctionNamesPython;
#pragma once

namespace probing::live {

inline constexpr char kFunctionNamesPython[] = R"PY(
def functions_of(filename, cache):
    """[(first line, last line, qualified name)] of the functions in a source file; None when
    its source cannot be read."""
    if filename in cache:
        return cache[filename]
    spans = None
    try:
        import ast, linecache
        source = "".join(linecache.getlines(filename))
        if 0 < len(source) <= 4 << 20:
            found = []

            def visit(node, prefix):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.ClassDef):
                        visit(child, prefix + child.name + ".")
                    elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                        last = getattr(child, "end_lineno", None) or child.lineno
                        found.append((first, last, prefix + child.name))
                        visit(child, prefix + child.name + ".<locals>.")
                    else:
                        visit(child, prefix)

            visit(ast.parse(source, filename), "")
            spans = found
    except Exception:
        spans = None
    cache[filename] = spans
    return spans


def function_at(filename, line, cache):
    spans = functions_of(filename, cache)
    if spans is None:
        return ""
    best = None
    for first, last, name in spans:
        if first <= line <= last and (best is None or first >= best[0]):
            best = (first, name)
    return best[1] if best else "<module>"
)PY";

}  // namespace probing::live
