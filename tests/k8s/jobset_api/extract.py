"""Reduce the JobSet CRD to the schema `validate.py` reads.

    python tests/k8s/jobset_api/extract.py jobset.x-k8s.io_jobsets.yaml [SOURCE-NOTE] > out.json

Takes `spec.versions[name=v1alpha2].schema.openAPIV3Schema` of the JobSet CRD (in a
multi-document file such as a release's manifests.yaml too), drops every `description` and
the `status` schema, and replaces the embedded Job template spec (the batch/v1 JobSpec that
controller-gen copies from k8s.io/api) by a reference `validate.py` resolves against the
Kubernetes schema of that version.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

EMBEDDED = {"x-embedded-kubernetes-schema": "io.k8s.api.batch.v1.JobSpec"}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def reduce_crd(documents: list[Any], source: str = "") -> dict[str, Any]:
    """The reduced v1alpha2 schema of the JobSet CRD among `documents`; KeyError if none."""
    (crd,) = [
        d
        for d in documents
        if isinstance(d, dict)
        and d.get("kind") == "CustomResourceDefinition"
        and d["spec"]["names"]["kind"] == "JobSet"
    ]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    schema = _strip(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    rjob = schema["properties"]["spec"]["properties"]["replicatedJobs"]["items"]
    rjob["properties"]["template"]["properties"]["spec"] = dict(EMBEDDED)
    return {"x-source": source, **schema} if source else schema


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        documents = list(yaml.safe_load_all(f))
    print(json.dumps(reduce_crd(documents, argv[2] if len(argv) > 2 else ""), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
