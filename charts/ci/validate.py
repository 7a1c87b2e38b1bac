"""Validates every object in rendered YAML files; prints one line per object and exits 1 on any failure.

    python validate.py [--crd CRD.yaml] [--servicemonitor-validator servicemonitor.mjs] FILE...

- Kubernetes kinds: kubernetes-validate's Kubernetes 1.37 schemas, strict (unknown fields fail).
- GrpcRoute: the openAPIV3Schema of the GrpcRoute CRD (from --crd, or a CRD in the same files) as JSON Schema,
  with unknown fields failing as under kubectl's strict field validation. Its CEL rules are evaluated by
  tests/crd.rs.
- ServiceMonitor: the Prometheus Operator's schema (@kubernetes-models/prometheus-operator), through node.
- Any other kind fails: an object nothing can check is not let through.
"""

import argparse
import copy
import json
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES = "1.37"


def crd_schema(crd):
    """JSON Schema of the served version of a CRD: OpenAPI's `nullable` and `x-kubernetes-*` turned into
    JSON Schema, and objects closed where the API server would reject unknown fields."""
    version = next(v for v in crd["spec"]["versions"] if v.get("served", True))

    def convert(node):
        node = {k: v for k, v in node.items()}
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
        for k in [k for k in node if k.startswith("x-kubernetes-")]:
            del node[k]
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if "properties" in node:
            node["properties"] = {k: convert(v) for k, v in node["properties"].items()}
            if not preserve and "additionalProperties" not in node:
                node["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = convert(node["additionalProperties"])
        if "items" in node:
            node["items"] = convert(node["items"])
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                node[key] = [convert(s) for s in node[key]]
        return node

    schema = convert(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # apiVersion, kind and metadata are checked by the API server itself, not by the CRD's schema.
    schema["properties"]["apiVersion"] = {"const": f'{crd["spec"]["group"]}/{version["name"]}'}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return schema


def name(doc):
    meta = doc.get("metadata") or {}
    ns = f'{meta["namespace"]}/' if meta.get("namespace") else ""
    return f'{doc.get("kind")} {ns}{meta.get("name")}'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--crd", help="a file holding the GrpcRoute CRD")
    parser.add_argument("--servicemonitor-validator", help="node script validating ServiceMonitors")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    docs = []
    for path in args.files:
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d]
    if args.crd:
        with open(args.crd) as f:
            crds = [d for d in yaml.safe_load_all(f) if d]
    else:
        crds = [d for _, d in docs if d.get("kind") == "CustomResourceDefinition"]
    custom = {}
    for crd in crds:
        schema = crd_schema(crd)
        jsonschema.Draft202012Validator.check_schema(schema)
        custom[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = jsonschema.Draft202012Validator(schema)

    failed, monitors = 0, []
    for path, doc in docs:
        where = f"{path}: {name(doc)}"
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        if (group, kind) in custom:
            errors = sorted(custom[(group, kind)].iter_errors(doc), key=lambda e: list(e.absolute_path))
            for e in errors:
                print(f"FAIL {where}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            failed += bool(errors)
            if not errors:
                print(f"ok   {where} (CRD schema)")
            continue
        if (group, kind) == ("monitoring.coreos.com", "ServiceMonitor") and args.servicemonitor_validator:
            monitors.append((where, doc))
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            print(f"ok   {where} (Kubernetes {KUBERNETES}, strict)")
        except kubernetes_validate.ValidationError as e:
            print(f"FAIL {where}: {'.'.join(map(str, e.path))}: {e.message}")
            failed += 1
        except kubernetes_validate.SchemaNotFoundError:
            print(f"FAIL {where}: no schema for {api_version} {kind}")
            failed += 1

    if monitors:
        out = subprocess.run(
            ["node", args.servicemonitor_validator],
            input="\n".join(json.dumps(d) for _, d in monitors),
            capture_output=True,
            text=True,
        )
        results = out.stdout.splitlines()
        if out.returncode != 0 or len(results) != len(monitors):
            print(f"FAIL ServiceMonitor validator: {out.stderr.strip() or out.stdout.strip()}")
            failed += 1
        else:
            for (where, _), result in zip(monitors, results):
                if result == "ok":
                    print(f"ok   {where} (Prometheus Operator schema)")
                else:
                    print(f"FAIL {where}: {result}")
                    failed += 1

    print(f"{len(docs) - failed} valid, {failed} invalid")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
