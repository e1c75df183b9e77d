"""The Job manifest of a snakegrinder run: rendered from ``templates/k8s-job.yaml.j2``, parsed
back, checked, and validated against the Kubernetes schema before anything is sent.

Every value reaches the template through ``tojson``, so a hostile name, env value or path is
YAML data and never template text. Kubernetes itself expands ``$(VAR)`` in a container's
command and env values; every ``$`` is doubled (``$$`` is Kubernetes' escape for ``$``) so
the payload receives exactly the text the user gave.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from warpforge_launch.errors import UsageError
from warpforge_launch.schedulers.kubernetes_state import (  # noqa: F401 (names used with km.)
    ANNOTATION_PREFIX,
    LABEL_CORRELATION_ID,
    LABEL_INSTANCE,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from warpforge_launch.secrets import MASK

TEMPLATE = "k8s-job.yaml.j2"
MAX_SOURCE_BYTES = 512 * 1024  # a Secret holds at most 1 MiB (base64 grows it by a third)
SOURCE_DIR = "/warpforge/src"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # the apiserver's rule (v1.20)
_QUANTITY_CPU = re.compile(r"^\d+(m)?$")


class ManifestError(UsageError):
    """A value cannot go into a Job manifest (bad input, exit 2)."""


@dataclass(frozen=True)
class JobSpec:
    """Everything the template needs, already mapped from the job to Kubernetes terms."""

    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    image: str
    pull_policy: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[str, ...]  # names; values go into the job's Secret at send time
    resources: dict[str, str]
    deadline_seconds: int
    source_file: str  # the file name the payload reads under SOURCE_DIR
    output_mount: str
    output_claim: str | None = None
    output_host_path: str | None = None
    ttl_seconds: int | None = None
    grace_seconds: int = 10
    service_account: str | None = None
    automount_token: bool = False
    priority_class: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    tolerations: tuple[dict[str, Any], ...] = ()
    pull_secrets: tuple[str, ...] = ()
    run_as_user: int = 1000
    run_as_group: int = 1000
    work_dir: str = "/tmp"

    @property
    def secret_name(self) -> str:
        return self.name


@dataclass(frozen=True)
class K8sRequest:
    """What a submit sends: the Job manifest, and the Secret holding the model source and
    the ``--secret-env`` values (read from this process only when it is sent)."""

    job: dict[str, Any]
    source_path: str  # on this machine; its content goes into the Secret
    source_sha256: str
    secret_env: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.job["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.job["metadata"]["namespace"]

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "secret": self.secret_manifest(masked=True)}

    def render(self) -> str:
        import yaml

        docs = [self.job, self.secret_manifest(masked=True)]
        return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False,
                                  width=float("inf"))

    def secret_manifest(self, *, masked: bool, values: dict[str, str] | None = None,
                        source: bytes | None = None) -> dict[str, Any]:
        """The Secret; ``masked`` for dry runs and the store (no content, no values).

        Immutable: it never changes, and the kubelet then keeps the copy it mounted instead of
        fetching it again - a cancel's garbage collection can remove the Secret before the
        pod has stopped, and a refetch that finds nothing would hold the pod's removal for
        its retry back-off (about a minute, seen on the lab cluster)."""
        labels = dict(self.job["metadata"]["labels"])
        meta = {"name": self.name, "namespace": self.namespace, "labels": labels}
        if masked:
            data = {"source": f"<{self.source_path}, sha256 {self.source_sha256}>"}
            data.update({secret_key(i): MASK for i in range(len(self.secret_env))})
            return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
                    "immutable": True, "stringData": data}
        assert source is not None and values is not None
        encoded = {"source": base64.b64encode(source).decode()}
        for i, env_name in enumerate(self.secret_env):
            encoded[secret_key(i)] = base64.b64encode(values[env_name].encode()).decode()
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
                "immutable": True, "data": encoded}


def secret_key(index: int) -> str:
    """Secret keys allow [-._a-zA-Z0-9] only, env names allow more: keys are by position."""
    return f"env-{index}"


def escape_dollars(text: str) -> str:
    """Kubernetes expands ``$(VAR)`` in command and env values and reads ``$$`` as ``$``."""
    return text.replace("$", "$$")


def read_source(path: str) -> tuple[bytes, str]:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UsageError(f"model source {path} is a directory, not a file") from None
    except OSError as exc:
        raise UsageError(f"model source {path} cannot be read: {exc.strerror or exc}",
                         hint="give --source a readable file") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise UsageError(f"model source {path} is {len(data) // 1024} KiB; at most "
                         f"{MAX_SOURCE_BYTES // 1024} KiB ship with a Kubernetes job",
                         hint="keep weights out of the source file")
    return data, hashlib.sha256(data).hexdigest()


def check_source_file_name(name: str) -> str:
    """The model's file name becomes a path inside a Secret volume: no '..', no '/'."""
    if not name or name in (".", "..") or name.startswith("..") or "/" in name \
            or "\0" in name or len(name.encode()) > 253:
        raise ManifestError(f"model source file name {name!r} cannot be used inside a pod",
                            hint="rename the file")
    return name


def check_name(kind: str, value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ManifestError(f"{kind} {value!r} is not a valid Kubernetes name (lower-case "
                            "letters, digits and '-', at most 63 characters)")
    return value


def check_label_value(key: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ManifestError(f"label {key}={value!r} is not a valid label value (at most 63 "
                            "letters, digits, '-', '_', '.')",
                            hint="use a shorter scheduler instance name")
    return value


def check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ManifestError(f"environment variable name {value!r} is not allowed by Kubernetes "
                            "(letters, digits, '_', '-', '.', not starting with a digit)")
    return value


def render(spec: JobSpec, cache_dir: Path | None = None) -> dict[str, Any]:
    """The Job as a dict: rendered, parsed back, and checked for what the template promised."""
    import yaml

    check_name("job name", spec.name)
    check_name("namespace", spec.namespace)
    for key, value in spec.labels.items():
        check_label_value(key, value)
    for env_name, _ in spec.env:
        check_env_name(env_name)
    for env_name in spec.secret_env:
        check_env_name(env_name)
    check_source_file_name(spec.source_file)
    if (spec.output_claim is None) == (spec.output_host_path is None):
        raise ManifestError("the output volume needs exactly one of a PVC or a hostPath")
    for text in (*spec.command, *(v for _, v in spec.env)):
        if "\0" in text:
            raise ManifestError(f"NUL character in value {text!r}")
    text = _template(str(cache_dir) if cache_dir else None).render(
        name=spec.name, namespace=spec.namespace, labels=sorted(spec.labels.items()),
        annotations=sorted(spec.annotations.items()), image=spec.image,
        pull_policy=spec.pull_policy, command=[escape_dollars(a) for a in spec.command],
        env=[(k, escape_dollars(v)) for k, v in spec.env],
        secret_env=[(n, secret_key(i)) for i, n in enumerate(spec.secret_env)],
        secret_name=spec.secret_name, resources=spec.resources,
        deadline_seconds=spec.deadline_seconds, ttl_seconds=spec.ttl_seconds,
        grace_seconds=spec.grace_seconds, service_account=spec.service_account,
        automount_token=spec.automount_token, priority_class=spec.priority_class,
        node_selector=spec.node_selector, nodes=list(spec.nodes),
        tolerations=list(spec.tolerations),
        pull_secrets=[{"name": s} for s in spec.pull_secrets], run_as_user=spec.run_as_user,
        run_as_group=spec.run_as_group, work_dir=spec.work_dir, source_dir=SOURCE_DIR,
        source_file=spec.source_file, output_mount=spec.output_mount,
        output_claim=spec.output_claim, output_host_path=spec.output_host_path,
    )
    job = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    container = job["spec"]["template"]["spec"]["containers"][0]
    if [unescape(a) for a in container["command"]] != list(spec.command):
        raise ManifestError("the rendered command differs from the payload argv")  # a bug
    return job


def unescape(text: str) -> str:
    return text.replace("$$", "$")


def validate_offline(manifest: dict[str, Any], version: str,
                     cache_dir: Path | None = None) -> None:
    """The strict schema check of kubernetes-validate (shipped schemas, no network).

    With ``cache_dir``, a manifest whose *shape* (every key, every value's JSON type, and the
    apiVersion and kind) passed before is not checked again: loading jsonschema and the
    schema costs a submit about 70 ms. That is exact only while the schema constrains values
    by type alone (its enums sit on apiVersion and kind; ``format`` is not asserted), which
    is checked on the schema itself before a shape is remembered.
    """
    key = _shape_key(manifest, version) if cache_dir is not None else None
    if key is not None and key in _remembered(cache_dir):
        return
    try:
        import kubernetes_validate
    except ImportError:  # optional: the apiserver validates on create anyway
        return
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in getattr(exc, "path", ())) or "(top)"
        raise ManifestError(f"the Job manifest is invalid at {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise UsageError(f"kubernetes-validate has no schema for Kubernetes {version}",
                         hint="set schema_version to one it ships (1.25 or later)") from None
    if key is not None and _types_only(version):
        _remember(cache_dir, key)


VALIDATED_FILE = "k8s-validated-shapes"
_VALUE_RULES = frozenset({
    "enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "not", "if", "dependentRequired", "dependentSchemas"})


def _shape(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if key in ("apiVersion", "kind"):
        return value
    return type(value).__name__


def _shape_key(manifest: dict[str, Any], version: str) -> str:
    text = json.dumps([version, _shape(manifest)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _remembered(cache_dir: Path) -> set[str]:
    try:
        return set((cache_dir / VALIDATED_FILE).read_text().split())
    except OSError:
        return set()


def _remember(cache_dir: Path, key: str) -> None:
    try:
        keys = [k for k in (cache_dir / VALIDATED_FILE).read_text().split() if k != key]
    except OSError:
        keys = []
    keys = [*keys[-199:], key]
    try:
        tmp = cache_dir / f".{VALIDATED_FILE}.{os.getpid()}"
        tmp.write_text("\n".join(keys) + "\n")
        os.replace(tmp, cache_dir / VALIDATED_FILE)
    except OSError:
        pass


@lru_cache(maxsize=4)
def _types_only(version: str) -> bool:
    """True when the strict schema of ``version`` holds no rule on values other than the
    enums of apiVersion and kind: then a manifest's shape decides its validity."""
    from kubernetes_validate import utils

    try:
        found = [v for v in utils.all_versions()
                 if utils.major_minor(v) <= utils.major_minor(version.lstrip("v"))][-1]
        defs = utils.schema_contents(f"kubernetes-json-schema/v{found}-local-strict/"
                                     "_definitions.json", version)
    except (IndexError, OSError, ValueError, utils.VersionNotSupportedError):
        return False

    def plain(node: Any, key: str | None, names: bool = False) -> bool:
        """``names``: the keys of ``node`` are property names (of "properties"), not rules."""
        if isinstance(node, dict):
            for k, v in node.items():
                if not names and k in _VALUE_RULES and not (
                        k == "enum" and key in ("apiVersion", "kind")):
                    return False
                if not plain(v, k, not names and k in ("properties", "$defs")):
                    return False
        elif isinstance(node, list):
            return all(plain(v, key) for v in node)
        return True

    return plain(defs, None)


@lru_cache(maxsize=2)
def _template(cache_dir: str | None = None):
    """The compiled template; with ``cache_dir`` its compiled code is kept there (0700), so
    a submit skips Jinja's compile step."""
    import jinja2

    text = template_text()
    cache = None
    if cache_dir is not None and os.path.isdir(cache_dir):
        cache = jinja2.FileSystemBytecodeCache(cache_dir)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, bytecode_cache=cache,
                             loader=jinja2.DictLoader({TEMPLATE: text}))
    env.policies["json.dumps_function"] = _yaml_safe_json
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env.get_template(TEMPLATE)


_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def _yaml_safe_json(value: Any, **kwargs: Any) -> str:
    """JSON that YAML reads back unchanged: characters YAML will not take raw (DEL, C1
    controls, its own line breaks, BOM, lone surrogates) become \\u escapes; the rest stays
    as it is so the parsed text equals the original."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def template_text() -> str:
    """The template from the wheel (force-included) or from the source tree."""
    try:
        packaged = resources.files("warpforge_launch").joinpath(f"templates/{TEMPLATE}")
        if packaged.is_file():
            return packaged.read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return (Path(__file__).resolve().parents[2] / "templates" / TEMPLATE).read_text()


def dumps(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, separators=(",", ":")).encode()
