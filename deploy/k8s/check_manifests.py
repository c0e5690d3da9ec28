"""Offline schema validation of rendered manifests; ``deploy/k8s/validate`` runs it.

- Kubernetes' own kinds: the OpenAPI schemas bundled with ``kubernetes-validate``, strict (an
  unknown or misspelt field fails), for each Kubernetes version given.
- Custom resources (KEDA, Prometheus Operator, Strimzi): the JSON schemas in ``schemas/`` next to
  this file, which reuse Kubernetes' definitions (metadata, label selectors, HPA behavior).
- Any other kind fails: an object nothing validates is an error, not a silent skip.

Usage: ``python check_manifests.py [--k8s-version 1.28 ...] FILE.yaml...``; exit status 1 on any
failure. Prints one line per object.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent / "schemas"
DEFAULT_VERSIONS = ("1.28", kubernetes_validate.latest_version())


def api_group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def is_builtin(api_version: str) -> bool:
    """Core (``v1``), unqualified groups (``apps``) and ``*.k8s.io`` groups ship with Kubernetes."""
    group = api_group(api_version)
    return "." not in group or group.endswith(".k8s.io")


def crd_schema_file(obj: dict[str, Any]) -> Path:
    group, _, version = obj["apiVersion"].partition("/")
    return SCHEMAS / f"{obj['kind'].lower()}-{group}-{version}.json"


def crd_validator(schema_file: Path) -> jsonschema.protocols.Validator:
    """Validator whose ``$ref``s into Kubernetes' definitions resolve offline."""
    version = kubernetes_validate.latest_version()
    bundled = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = Resource.from_contents(json.loads((bundled / "_definitions.json").read_text()))
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema, registry=definitions @ Registry())


def check(obj: dict[str, Any], versions: list[str]) -> str:
    """An empty string when valid, else why not."""
    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return "no apiVersion/kind"
    if is_builtin(obj["apiVersion"]):
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(part) for part in error.path)
                return f"Kubernetes {version} schema: {where}: {error.message}"
            except kubernetes_validate.SchemaNotFoundError:
                return f"Kubernetes {version} has no {obj['kind']} in {obj['apiVersion']}"
        return ""
    schema_file = crd_schema_file(obj)
    if not schema_file.is_file():
        return f"no schema for custom resource {obj['apiVersion']} {obj['kind']} (add {schema_file.name})"
    errors = sorted(crd_validator(schema_file).iter_errors(obj), key=lambda e: list(e.path))
    return "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument(
        "--k8s-version", action="append", dest="versions", help=f"default: {' and '.join(DEFAULT_VERSIONS)}"
    )
    args = parser.parse_args(argv)
    versions = args.versions or list(DEFAULT_VERSIONS)
    failures = total = 0
    for path in args.files:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            total += 1
            name = f"{path.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            against = (
                f"Kubernetes {', '.join(versions)}"
                if is_builtin(str(obj.get("apiVersion")))
                else f"schemas/{crd_schema_file(obj).name}"
            )
            problem = check(obj, versions)
            if problem:
                failures += 1
                print(f"  FAIL {name}: {problem}")
            else:
                print(f"  ok   {name} ({against})")
    print(f"  {total - failures} of {total} objects valid")
    return 1 if failures or not total else 0


if __name__ == "__main__":
    sys.exit(main())
