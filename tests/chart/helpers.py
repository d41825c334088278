"""Helpers for the chart, alert-rule and dashboard tests.

The Helm SDK (PyPI helm-python-sdk, Helm v4 in a shared library) lints and renders the chart
offline; kubernetes-validate checks rendered objects against the Kubernetes OpenAPI schemas.
Run through tests/chart/run.sh, which installs both into a cached venv.
"""

from __future__ import annotations

import functools
import json
import glob
import os
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
from helm_python import _native as helm_native
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "outbox-relay"
CI_VALUES = sorted(glob.glob(str(CHART / "ci" / "*-values.yaml")))
PARENT_EXAMPLE = CHART / "examples" / "my-app"

# Kubernetes versions the rendered objects are validated against: 1.29 is the first with native
# sidecars on by default; the other is the newest this kubernetes-validate pin knows.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())

# Custom resources: kubernetes-validate has no schema for them; they are parsed and checked by the
# tests instead.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

# Values that satisfy the chart's required settings.
MINIMAL = {"existingSecret": "outbox-relay-credentials"}

# kubernetes-validate re-reads its (1.5 MB) definitions file for every object; read each once.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (Kubernetes would keep only one)."""


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)


def load_yaml_docs(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]


def merge(base: dict, override: dict) -> dict:
    """Deep merge of two values dicts (override wins), like Helm's -f a.yaml -f b.yaml."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def values_file(path: str | Path) -> dict:
    return load_yaml(Path(path).read_text()) or {}


@functools.lru_cache(maxsize=None)
def _chart(path: str) -> helm.Chart:
    return helm.Chart.load(path)


def render_raw(
    values: dict | None, chart: Path = CHART, *, name: str = "rel", kube_version: str | None = None
) -> dict[str, str]:
    """Template path -> rendered text, like `helm template` (namespace "ns").

    Calls the library directly because Chart.render() of this SDK version does not pass the
    kube_version option (the Kubernetes version templates see in .Capabilities) that the native
    helm_render function accepts.
    """
    opts: dict[str, Any] = {"name": name, "namespace": "ns"}
    if kube_version:
        opts["kube_version"] = kube_version
    payload = helm_native.call_string(
        "helm_render",
        _chart(str(chart))._raw(),
        None if values is None else json.dumps(values),
        json.dumps(opts),
    )
    return json.loads(payload)


def render(values: dict | None = None, chart: Path = CHART, **opts: Any) -> list[dict]:
    """Every rendered Kubernetes object (NOTES.txt left out)."""
    docs: list[dict] = []
    for name, text in sorted(render_raw(values, chart, **opts).items()):
        if not name.endswith("NOTES.txt"):
            docs.extend(load_yaml_docs(text))
    return docs


def find(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(spec: dict, name: str, where: str = "containers") -> dict:
    matches = [c for c in spec.get(where) or [] if c["name"] == name]
    assert len(matches) == 1, f"expected container {name} in {where}, got {spec.get(where)}"
    return matches[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env") or []}


def validate_k8s(doc: dict, version: str) -> None:
    kubernetes_validate.validate(dict(doc), version, strict=True)


def render_parent(tmp_path: Path, relay_values: dict | None = None) -> list[dict]:
    """Renders the example parent chart with this chart as its dependency in charts/."""
    parent = tmp_path / "my-app"
    shutil.copytree(PARENT_EXAMPLE, parent)
    shutil.copytree(
        CHART, parent / "charts" / "outbox-relay", ignore=shutil.ignore_patterns("examples")
    )
    values = {"outbox-relay": relay_values} if relay_values else None
    return render(values, chart=parent, name="shop")


def helm_error(fn, *args, **kwargs) -> str:
    """Runs fn, expecting a Helm error; returns its message."""
    with pytest.raises(helm.HelmError) as info:
        fn(*args, **kwargs)
    return str(info.value)
