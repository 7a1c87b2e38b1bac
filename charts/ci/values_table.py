"""The values table of charts/switchboard/README.md and of the project README.md, from the `# --` comments of values.yaml (helm-docs style).

    python values_table.py CHART_DIR          rewrite the table between the README's markers
    python values_table.py CHART_DIR --check  only check (exit 1 on a problem)

Both refuse a chart where a value has no `# --` comment (on itself or on an enclosing object), or where
values.yaml and values.schema.json disagree on which keys exist: the README, the schema and the defaults
cannot drift apart.
"""

import json
import re
import sys
from pathlib import Path

import yaml

START = "<!-- values-table:start (generated from values.yaml by `make chart-generate`; do not edit) -->"
END = "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def documented(values_text):
    """Map of dotted key path -> (description, @default override) for every key with a `# --` comment."""
    docs, stack, pending = {}, [], None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        if not stripped:
            pending = None
            continue
        m = KEY.match(line)
        if not m or line.lstrip().startswith("- "):
            pending = None
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        if pending is not None:
            path = ".".join(k for _, k in stack)
            docs[path] = " ".join(pending)
            pending = None
    return docs


def leaves(value, prefix=""):
    """Dotted paths of the values a user sets: scalars, lists, and empty objects."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def lookup(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def schema_paths(schema, prefix=""):
    """(path, closed) for each property the schema declares, descending into the objects it closes (where
    `additionalProperties: false` makes every key a declared one)."""
    for k, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{k}" if prefix else k
        closed = sub.get("additionalProperties") is False
        yield path, closed
        if closed:
            yield from schema_paths(sub, path)


NAMES = {"boolean": "bool", "integer": "int", "number": "number", "string": "string", "array": "list",
         "object": "object", "null": "null"}


def schema_node(schema, path):
    for part in path.split("."):
        schema = schema.get("properties", {}).get(part)
        if schema is None:
            return {}
    return schema


def type_name(node, value):
    """The value's type as the schema declares it (`int or null`, `int or string`), else from the default."""
    types = node.get("type")
    if types is None and "anyOf" in node:
        types = [t["type"] for t in node["anyOf"] if "type" in t]
    if types is None and "enum" in node and all(isinstance(v, str) for v in node["enum"]):
        types = ["string"]
    if isinstance(types, str):
        types = [types]
    if types:
        return " or ".join(NAMES[t] for t in types)
    return {bool: "bool", int: "int", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), "null"
    )


def cell(text):
    return text.replace("|", "\\|")


def table(values, docs, schema):
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path in docs:
        value = lookup(values, path)
        default = json.dumps(value, separators=(",", ":"))
        if len(default) > 60 or (isinstance(value, dict) and value):
            default = "see values.yaml"
        else:
            default = f"`{cell(default)}`"
        rows.append(f"| `{path}` | {type_name(schema_node(schema, path), value)} | {default} | {cell(docs[path])} |")
    return "\n".join(rows)


def problems(values, docs, schema):
    out = []
    for leaf in leaves(values):
        parts = leaf.split(".")
        if not any(".".join(parts[:i]) in docs for i in range(1, len(parts) + 1)):
            out.append(f"values.yaml: `{leaf}` has no `# --` comment (on itself or an enclosing key)")
    paths = dict(schema_paths(schema))
    paths.pop("global", None)
    declared = set(paths)
    closed = {p for p, c in paths.items() if c} | {""}
    present = set()
    for leaf in leaves(values):
        parts = leaf.split(".")
        present.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    for p in sorted(present):
        parent = p.rsplit(".", 1)[0] if "." in p else ""
        if parent in closed and p not in declared:
            out.append(f"values.schema.json: no property for `{p}`")
    for p in sorted(declared - present):
        out.append(f"values.schema.json: `{p}` is not in values.yaml")
    return out


def main():
    chart = Path(sys.argv[1])
    check = "--check" in sys.argv[2:]
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = documented(text)
    schema = json.loads((chart / "values.schema.json").read_text())
    errs = problems(values, docs, schema)
    # The chart's README and the project's README both carry the table.
    readmes = [chart / "README.md", chart.resolve().parent.parent / "README.md"]
    texts = {}
    for readme_path in readmes:
        readme = readme_path.read_text()
        if START not in readme or END not in readme:
            errs.append(f"{readme_path}: the values-table markers are missing")
        texts[readme_path] = readme
    if errs:
        print("\n".join(errs), file=sys.stderr)
        sys.exit(1)
    rendered = table(values, docs, schema)
    for readme_path, readme in texts.items():
        head, rest = readme.split(START, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{START}\n{rendered}\n{END}{tail}"
        if check:
            if new != readme:
                print(f"{readme_path}: the values table is stale; run `make chart-generate`", file=sys.stderr)
                sys.exit(1)
        elif new != readme:
            readme_path.write_text(new)

if __name__ == "__main__":
    main()
