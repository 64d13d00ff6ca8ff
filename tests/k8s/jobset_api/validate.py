"""Read a JobSet the way a cluster running JobSet v0.10, v0.11 or v0.12 reads it.

The stages of a create, each a function:

1. `structural_errors`: the CRD's structural schema (`jobset_v1alpha2.schema.json`, see
   README.md for its source). The API server *prunes* a field the schema does not name,
   silently, so an unknown field here is an error, not a warning. Types, enums, patterns,
   bounds, `required`, `format: int32/int64` and `x-kubernetes-int-or-string` are checked
   as apiextensions-apiserver checks them. The Job template's `spec` is the batch/v1
   JobSpec of the k8s.io/api the release was built with; it is checked against
   kubernetes-validate's strict schema of that Kubernetes minor, plus the Quantity pattern
   controller-gen writes into the CRD (kubernetes-validate's Quantity has no pattern).
2. `apply_defaults`: what CRD defaulting and the JobSet mutating webhook
   (`jobSetWebhook.Default`, pkg/webhooks/jobset_webhook.go) fill in before validation.
3. `metadata_errors`: the ObjectMeta rules every object meets (name, namespace, label and
   annotation keys and values), here for the JobSet and its Job and pod templates.
4. `webhook_errors`: what `jobSetWebhook.ValidateCreate` rejects, rule by rule, each
   citing the source it mirrors. `admission_errors` runs all of them.

CEL rules (`x-kubernetes-validations`) cannot be evaluated here; `cel_rules` lists each one
with its path so a test can hand-check the ones that apply.

Pure functions over plain dicts; no I/O except reading the vendored schema files once.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "jobset_v1alpha2.schema.json"

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# The pattern controller-gen writes for every resource.Quantity (int-or-string) in the CRD.
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


ACTIONS = ("FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts")
RESTART_STRATEGIES = ("Recreate", "BlockingRecreate")


@dataclass(frozen=True)
class Release:
    """One JobSet minor release, as far as its admission of a JobSet differs.

    `k8s` is the Kubernetes minor of the k8s.io/api the CRD's embedded JobSpec was generated
    from; `restart_strategies` and `actions` the enums of spec.failurePolicy.restartStrategy
    and of its rules' action; `message_patterns` whether rules have
    onJobFailureMessagePatterns.
    """

    name: str
    k8s: str
    restart_strategies: tuple[str, ...] = RESTART_STRATEGIES
    actions: tuple[str, ...] = ACTIONS
    message_patterns: bool = True
    depends_on_max_items: int = 5


# From the releases' CHANGELOG/CHANGELOG-0.1x.md in kubernetes-sigs/jobset.
RELEASES = {
    # v0.10.0: onJobFailureMessagePatterns (#1033); Kubernetes 1.34 libraries (#1020, #1011).
    # v0.10.1 fixed the Helm chart's CRD, which lacked the new field (#1048).
    "v0.10": Release("v0.10", "1.34"),
    # v0.11.0: InPlaceRestart (#1099, alpha gate), k8s.io/api 0.35 (#1105).
    "v0.11": Release("v0.11", "1.35", (*RESTART_STRATEGIES, "InPlaceRestart")),
    # v0.12.0: actions RestartJob and RestartJobAndIgnoreMaxRestarts (#1177, #1191),
    # k8s.io/api 0.36 (#1212).
    "v0.12": Release(
        "v0.12",
        "1.36",
        (*RESTART_STRATEGIES, "InPlaceRestart"),
        (*ACTIONS, "RestartJob", "RestartJobAndIgnoreMaxRestarts"),
    ),
}
# A release before the message patterns existed (the stored CRD at commit 01078527:
# dependsOn maxItems 1, no onJobFailureMessagePatterns). Used to prove the check bites.
BEFORE_MESSAGE_PATTERNS = Release(
    "pre-v0.10", "1.34", message_patterns=False, depends_on_max_items=1
)


@functools.cache
def _base_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text())
    schema.pop("x-source")
    return schema


def schema_for(release: Release) -> dict[str, Any]:
    """The JobSet openAPIV3Schema of `release` (a fresh copy: callers may mutate it)."""
    schema = copy.deepcopy(_base_schema())
    spec = schema["properties"]["spec"]["properties"]
    policy = spec["failurePolicy"]["properties"]
    policy["restartStrategy"]["enum"] = list(release.restart_strategies)
    policy["rules"]["items"]["properties"]["action"]["enum"] = list(release.actions)
    if not release.message_patterns:
        del policy["rules"]["items"]["properties"]["onJobFailureMessagePatterns"]
    rjob = spec["replicatedJobs"]["items"]["properties"]
    rjob["dependsOn"]["maxItems"] = release.depends_on_max_items
    return schema


# --- 1. structural schema -----------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def structural_errors(obj: Any, release: Release) -> list[str]:
    """Every place the API server would prune, or reject, `obj` under `release`'s CRD."""
    errors: list[str] = []
    _walk(obj, schema_for(release), "", errors, release)
    return errors


# The root `metadata` is `type: object` in every CRD: the API server reads it as an ObjectMeta
# (apiextensions-apiserver, structural schema rules), so unknown keys there are dropped too.
OBJECT_META = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


def _walk(value: Any, schema: dict[str, Any], path: str, errors: list[str], rel: Release) -> None:
    if path == ".metadata":
        if not isinstance(value, dict):
            errors.append(f"{path}: not an object")
            return
        errors.extend(f"{path}.{key}: unknown field" for key in value if key not in OBJECT_META)
        return
    if "x-embedded-kubernetes-schema" in schema:
        errors.extend(job_spec_errors(value, rel.k8s, path))
        return
    if value is None:
        # Not `nullable`: apiextensions prunes a null before defaulting; the field is lost.
        errors.append(f"{path}: null (pruned: the field is not nullable)")
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (_is_int(value) or isinstance(value, str)):
            errors.append(f"{path}: {value!r} is neither an integer nor a string")
        return
    kind = schema.get("type")
    if kind == "object":
        _walk_object(value, schema, path, errors, rel)
    elif kind == "array":
        _walk_array(value, schema, path, errors, rel)
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: {value!r} is not a string")
            return
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    elif kind == "integer":
        if not _is_int(value):
            errors.append(f"{path}: {value!r} is not an integer")
            return
        low, high = {"int32": INT32, "int64": INT64}.get(schema.get("format", ""), (None, None))
        if low is not None and not low <= value <= high:
            errors.append(f"{path}: {value} overflows {schema['format']}")
        _bounds(value, schema, path, errors)
    elif kind == "number":
        if not (_is_int(value) or isinstance(value, float)):
            errors.append(f"{path}: {value!r} is not a number")
            return
        _bounds(value, schema, path, errors)
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{path}: {value!r} is not a boolean")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")


def _bounds(value: float, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} < minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} > maximum {schema['maximum']}")


def _walk_object(
    value: Any, schema: dict[str, Any], path: str, errors: list[str], rel: Release
) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: {type(value).__name__} is not an object")
        return
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields", False) or extra is True
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in properties:
            _walk(item, properties[key], where, errors, rel)
        elif isinstance(extra, dict):
            _walk(item, extra, where, errors, rel)
        elif not keeps_unknown:
            errors.append(f"{where}: unknown field (the API server prunes it silently)")
    errors.extend(
        f"{path}: missing required {key!r}"
        for key in schema.get("required", [])
        if key not in value
    )


def _walk_array(
    value: Any, schema: dict[str, Any], path: str, errors: list[str], rel: Release
) -> None:
    if not isinstance(value, list):
        errors.append(f"{path}: {type(value).__name__} is not an array")
        return
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    for index, item in enumerate(value):
        _walk(item, schema.get("items", {}), f"{path}[{index}]", errors, rel)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
        if len(seen) != len(set(seen)):
            errors.append(f"{path}: duplicate list-map keys {keys}")
    elif list_type == "set" and len(value) != len({json.dumps(v, sort_keys=True) for v in value}):
        errors.append(f"{path}: duplicate items in a set")


# --- the embedded batch/v1 JobSpec ----------------------------------------------------------


@functools.cache
def _job_spec_validator(k8s: str) -> Any:
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = root / f"v{k8s}.0-local-strict"
    schema = json.loads((folder / "jobspec-batch-v1.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def job_spec_errors(spec: Any, k8s: str, path: str = "") -> list[str]:
    """The JobSpec against Kubernetes `k8s`'s strict schema, nulls, and Quantity patterns."""
    errors = [
        f"{path}.{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _job_spec_validator(k8s).iter_errors(spec)
    ]
    errors.extend(f"{where}: null (pruned)" for where in _nulls(spec, path))
    if not isinstance(spec, dict):
        return errors
    pod = spec.get("template", {}).get("spec", {})
    for group in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(group) or []):
            resources = container.get("resources") or {}
            for field in ("limits", "requests"):
                for name, quantity in (resources.get(field) or {}).items():
                    where = f"{path}.template.spec.{group}[{index}].resources.{field}.{name}"
                    errors.extend(_quantity_errors(quantity, where))
    for index, volume in enumerate(pod.get("volumes") or []):
        size = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size is not None:
            errors.extend(_quantity_errors(size, f"{path}.template.spec.volumes[{index}]"))
    return errors


def _quantity_errors(quantity: Any, where: str) -> list[str]:
    if _is_int(quantity):
        return []
    if isinstance(quantity, str) and QUANTITY.match(quantity):
        return []
    return [f"{where}: {quantity!r} is not a resource quantity"]


def _nulls(value: Any, path: str) -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _nulls(v, f"{path}[{i}]")]
    return []


# --- CEL rules --------------------------------------------------------------------------------


def cel_rules(release: Release) -> list[tuple[str, str, str]]:
    """(schema path, rule, message) of every x-kubernetes-validations in the JobSet schema."""
    found: list[tuple[str, str, str]] = []

    def visit(schema: dict[str, Any], path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            found.append((path or ".", rule["rule"], rule["message"]))
        for key, sub in schema.get("properties", {}).items():
            visit(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            visit(schema["items"], f"{path}[]")

    visit(schema_for(release), "")
    return found


# --- 2. defaulting ----------------------------------------------------------------------------


def apply_defaults(jobset: dict[str, Any], release: Release) -> dict[str, Any]:
    """A copy of `jobset` as CRD defaulting and `jobSetWebhook.Default` leave it."""
    js = copy.deepcopy(jobset)
    spec = js.setdefault("spec", {})
    # CRD `default:` values (structural defaulting, before the webhooks).
    policy = spec.get("failurePolicy")
    if policy is not None:
        policy.setdefault("restartStrategy", "Recreate")
    for rjob in spec.get("replicatedJobs", []):
        rjob.setdefault("groupName", "default")
        rjob.setdefault("replicas", 1)
    # jobSetWebhook.Default (pkg/webhooks/jobset_webhook.go).
    spec.setdefault("successPolicy", {"operator": "All"})
    spec.setdefault("startupPolicy", {"startupPolicyOrder": "AnyOrder"})
    for rjob in spec.get("replicatedJobs", []):
        job = rjob.setdefault("template", {}).setdefault("spec", {})
        job.setdefault("completionMode", "Indexed")
        pod = job.setdefault("template", {}).setdefault("spec", {})
        pod.setdefault("restartPolicy", "OnFailure")
    network = spec.setdefault("network", {})
    network.setdefault("enableDNSHostnames", True)
    network.setdefault("publishNotReadyAddresses", True)
    for index, rule in enumerate((policy or {}).get("rules", [])):
        if not rule.get("name"):
            rule["name"] = f"failurePolicyRule{index}"
    return js


# --- 3. the validating webhook ------------------------------------------------------------
# k8s.io/apimachinery/pkg/util/validation/validation.go

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_dns1035_label(value: str) -> bool:
    """validation.IsDNS1035Label: at most 63 characters, a lower-case letter first."""
    return len(value) <= 63 and bool(DNS1035_LABEL.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    """validation.IsDNS1123Subdomain: at most 253 characters of dot-separated labels."""
    return len(value) <= 253 and bool(DNS1123_SUBDOMAIN.match(value))


def is_qualified_name(value: str) -> bool:
    """validation.IsQualifiedName: [prefix/]name, prefix a DNS subdomain, name <= 63."""
    prefix, _, name = value.rpartition("/")
    if prefix and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(QUALIFIED_NAME.match(name))


def is_label_value(value: str) -> bool:
    """validation.IsValidLabelValue: at most 63 characters, alphanumeric at both ends."""
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


# pkg/webhooks/jobset_webhook.go: validOnJobFailureReasons (batch/v1 Job condition reasons).
JOB_FAILURE_REASONS = frozenset(
    {
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "FailedIndexes",
        "MaxFailedIndexesExceeded",
        "PodFailurePolicy",
    }
)
# pkg/webhooks/jobset_webhook.go: ruleNameFmt, minRuleNameLength, maxRuleNameLength.
RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
RULE_NAME_LENGTH = (1, 128)
# What the webhook appends to the longest deterministic pod name: the Job controller names
# an Indexed Job's pods <job>-<index>-<5 random characters>.
POD_NAME_RANDOM_SUFFIX = "-abcde"
INT32_MAX = 2**31 - 1

# Python-only regexp syntax Go's regexp (RE2) rejects: lookaround, backreferences, atomic
# groups, possessive quantifiers, \Z (RE2 spells it \z), conditionals.
_NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\(\?>|[*+?}]\+|\\Z|\(\?\(")


def re2_compiles(pattern: str) -> bool:
    """A conservative stand-in for Go's regexp.Compile: Python compiles it and it uses no
    syntax outside RE2's (https://golang.org/s/re2syntax). Repetition counts over 1000,
    which RE2 rejects, are refused too."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    if _NOT_RE2.search(pattern):
        return False
    return all(int(n) <= 1000 for n in re.findall(r"\{(\d+)(?:,\d*)?\}", pattern))


def job_name(jobset: str, rjob: str, job_index: int) -> str:
    """placement.GenJobName (pkg/util/placement/placement.go): <jobset>-<rjob>-<index>."""
    return f"{jobset}-{rjob}-{job_index}"


def pod_name(jobset: str, rjob: str, job_index: int, pod_index: int) -> str:
    """placement.GenPodName: <jobset>-<rjob>-<jobIndex>-<podIndex> (also the pod hostname)."""
    return f"{jobset}-{rjob}-{job_index}-{pod_index}"


def metadata_errors(jobset: dict[str, Any]) -> list[str]:
    """ObjectMeta as the API server validates it on every object (apimachinery
    pkg/api/validation/objectmeta.go): name a DNS subdomain, namespace a DNS label, label
    keys qualified names and values label values, annotation keys qualified names."""
    meta = jobset.get("metadata", {})
    errors = []
    name = meta.get("name", "")
    if not is_dns1123_subdomain(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and not (len(namespace) <= 63 and DNS1123_LABEL.match(namespace)):
        errors.append(f"metadata.namespace {namespace!r} is not a DNS-1123 label")
    for where, labels in _label_maps(jobset):
        for key, value in labels.items():
            if not is_qualified_name(key):
                errors.append(f"{where}: label key {key!r} is not a qualified name")
            if not isinstance(value, str) or not is_label_value(value):
                errors.append(f"{where}: label {key}={value!r} is not a valid label value")
    for where, notes in _annotation_maps(jobset):
        for key in notes:
            if not is_qualified_name(key):
                errors.append(f"{where}: annotation key {key!r} is not a qualified name")
        size = sum(len(k) + len(str(v)) for k, v in notes.items())
        if size > 256 * 1024:
            errors.append(f"{where}: annotations exceed 256 KiB")
    return errors


def _templates(jobset: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [("metadata", jobset.get("metadata", {}))]
    for i, rjob in enumerate(jobset.get("spec", {}).get("replicatedJobs", [])):
        template = rjob.get("template", {})
        found.append((f"spec.replicatedJobs[{i}].template.metadata", template.get("metadata", {})))
        pod = template.get("spec", {}).get("template", {})
        found.append(
            (f"spec.replicatedJobs[{i}].template.spec.template.metadata", pod.get("metadata", {}))
        )
    return found


def _label_maps(jobset: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{w}.labels", m.get("labels") or {}) for w, m in _templates(jobset)]


def _annotation_maps(jobset: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{w}.annotations", m.get("annotations") or {}) for w, m in _templates(jobset)]


def webhook_errors(jobset: dict[str, Any], release: Release) -> list[str]:
    """What jobSetWebhook.ValidateCreate (pkg/webhooks/jobset_webhook.go) rejects, applied
    to the JobSet after `apply_defaults`. Rules that only concern fields never rendered
    (managedBy, coordinator, in-place restart settings) are checked when present."""
    js = apply_defaults(jobset, release)
    name = js["metadata"]["name"]
    spec = js["spec"]
    rjobs = spec.get("replicatedJobs", [])
    names = [r["name"] for r in rjobs]
    errors: list[str] = []

    if rjobs and rjobs[0].get("dependsOn"):
        errors.append("DependsOn can't be set for the first ReplicatedJob")

    subdomain = spec["network"].get("subdomain", "")
    if subdomain:
        # The subdomain names the headless Service: a DNS-1123 subdomain and a DNS-1035 label.
        if not is_dns1123_subdomain(subdomain):
            errors.append(f"network.subdomain {subdomain!r} is not a DNS-1123 subdomain")
        if not is_dns1035_label(subdomain):
            errors.append(f"network.subdomain {subdomain!r} is not a DNS-1035 label")

    managed_by = spec.get("managedBy")
    if managed_by is not None:
        prefix, slash, _ = managed_by.partition("/")
        if not slash or not is_dns1123_subdomain(prefix) or len(managed_by) > 63:
            errors.append(f"managedBy {managed_by!r} is not a domain-prefixed path of <= 63")

    seen: set[str] = set()
    for rjob in rjobs:
        job = rjob["template"]["spec"]
        replicas = rjob.get("replicas", 1)
        if job.get("parallelism", 1) * replicas > INT32_MAX:
            errors.append(f"replicas x parallelism of {rjob['name']!r} exceeds {INT32_MAX}")
        if not is_dns1035_label(rjob.get("groupName", "default")):
            errors.append(f"groupName {rjob.get('groupName')!r} is not a DNS-1035 label")
        longest_job = job_name(name, rjob["name"], replicas - 1)
        if not is_dns1035_label(longest_job):
            errors.append(f"child Job name {longest_job!r} is not a DNS-1035 label (<= 63)")
        if job.get("completionMode") == "Indexed" and job.get("completions") is not None:
            longest_pod = pod_name(name, rjob["name"], replicas - 1, job["completions"] - 1)
            with_suffix = longest_pod + POD_NAME_RANDOM_SUFFIX
            if not is_dns1035_label(with_suffix):
                errors.append(
                    f"pod name {with_suffix!r} (with the Job controller's random suffix) "
                    "is not a DNS-1035 label (<= 63)"
                )
        for dep in rjob.get("dependsOn") or []:
            if dep["name"] not in seen:
                errors.append(f"{rjob['name']!r} depends on {dep['name']!r}, not an earlier one")
        seen.add(rjob["name"])

    for target in spec["successPolicy"].get("targetReplicatedJobs", []):
        if target not in names:
            errors.append(f"successPolicy targets unknown replicatedJob {target!r}")

    errors.extend(_failure_policy_errors(spec.get("failurePolicy"), names, release))

    coordinator = spec.get("coordinator")
    if coordinator is not None:
        target = next((r for r in rjobs if r["name"] == coordinator["replicatedJob"]), None)
        if target is None:
            errors.append(f"coordinator replicatedJob {coordinator['replicatedJob']!r} missing")
        elif not 0 <= coordinator.get("jobIndex", 0) < target.get("replicas", 1):
            errors.append("coordinator jobIndex out of range")
    return errors


def _failure_policy_errors(
    policy: dict[str, Any] | None, names: list[str], release: Release
) -> list[str]:
    if policy is None:
        return []
    errors = []
    low, high = RULE_NAME_LENGTH
    rule_names = [rule["name"] for rule in policy.get("rules", [])]
    for rule in policy.get("rules", []):
        rule_name = rule["name"]
        if not low <= len(rule_name) <= high:
            errors.append(f"rule name {rule_name!r} is not {low}..{high} characters")
        if not RULE_NAME.match(rule_name):
            errors.append(f"rule name {rule_name!r} does not match {RULE_NAME.pattern}")
        for target in rule.get("targetReplicatedJobs", []):
            if target not in names:
                errors.append(f"rule {rule_name!r} targets unknown replicatedJob {target!r}")
        for reason in rule.get("onJobFailureReasons", []):
            if reason not in JOB_FAILURE_REASONS:
                errors.append(f"rule {rule_name!r}: {reason!r} is not a Job failure reason")
        if release.message_patterns:
            for pattern in rule.get("onJobFailureMessagePatterns", []):
                if not re2_compiles(pattern):
                    errors.append(f"rule {rule_name!r}: {pattern!r} is not an RE2 regexp")
    duplicates = sorted({n for n in rule_names if rule_names.count(n) > 1})
    errors.extend(f"rule name {n!r} is not unique" for n in duplicates)
    if policy.get("restartStrategy") == "InPlaceRestart":
        # v0.11+ (jobset PR #1099): refused unless the InPlaceRestart feature gate (alpha) is
        # on, and then only with further settings this validator does not model.
        errors.append("restartStrategy InPlaceRestart needs the InPlaceRestart feature gate")
    return errors


def admission_errors(jobset: dict[str, Any], release: Release) -> list[str]:
    """Everything above, in the API server's order: schema, metadata, then the webhook."""
    structural = structural_errors(jobset, release)
    if structural:
        return structural  # the webhook would see a pruned object; stop at the first stage
    return [*metadata_errors(jobset), *webhook_errors(jobset, release)]
