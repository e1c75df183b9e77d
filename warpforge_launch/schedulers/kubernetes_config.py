"""The inventory settings of a ``type: kubernetes`` scheduler instance, checked on load."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

VENDORS = ("NVIDIA", "AMD")


@dataclasses.dataclass(frozen=True)
class KubernetesConfig:
    """``schedulers.<name>`` for ``type: kubernetes`` in the inventory."""

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012 (pydantic reads this)
    kubeconfig: str | None = None  # None: $KUBECONFIG, then ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    in_cluster: bool = False  # the pod's service account instead of a kubeconfig
    namespace: str = "warpforge"
    registry: str = "localhost:5000"
    image_version: str = "latest"
    image_nvidia: str | None = None  # default <registry>/warpforge:nvidia-<version>
    image_amd: str | None = None  # default <registry>/warpforge:amd-<version>
    image_cpu: str | None = None  # default <registry>/warpforge:cpu-<version>
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    snakegrinder: str = "/opt/warpforge/bin/snakegrinder"  # inside the image
    node_selectors: dict[str, dict[str, str]] = dataclasses.field(default_factory=lambda: {
        "NVIDIA": {"accelerator": "nvidia"}, "AMD": {"accelerator": "amd"}})
    gpu_resources: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "NVIDIA": "nvidia.com/gpu", "AMD": "amd.com/gpu"})
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account: str | None = None
    ttl_seconds_after_finished: int | None = 86400
    priority_classes: dict[str, str] = dataclasses.field(default_factory=dict)  # {"80": "high"}
    # the output volume: a PVC or a hostPath, mounted at output_mount_path in the pod; each
    # job writes to <mount>/<job name>; local_output_root is where this machine sees it
    output_claim: str | None = None
    output_host_path: str | None = None
    output_mount_path: str = "/warpforge/out"
    local_output_root: str | None = None
    run_as_user: int = 1000
    run_as_group: int = 1000
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    allow_pending: bool = False  # accept GPU requests no node can satisfy now (they wait)
    server_dry_run: bool = False  # let the apiserver check both objects before creating them
    schema_version: str = "1.25"  # kubernetes-validate's oldest schema; v1.20 Jobs fit it

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "request_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("snakegrinder", "output_mount_path"):
            if not str(getattr(self, name)).startswith("/"):
                raise ValueError(f"{name} must be an absolute path in the image")
        if self.output_host_path is not None and not self.output_host_path.startswith("/"):
            raise ValueError("output_host_path must be an absolute path on the nodes")
        if self.output_claim and self.output_host_path:
            raise ValueError("give output_claim or output_host_path, not both")
        for table in ("node_selectors", "gpu_resources"):
            unknown = set(getattr(self, table)) - set(VENDORS)
            if unknown:
                raise ValueError(f"{table}: unknown GPU vendor {sorted(unknown)[0]!r} "
                                 "(NVIDIA or AMD)")
        for threshold in self.priority_classes:
            if not str(threshold).isdigit() or not 0 <= int(threshold) <= 100:
                raise ValueError(f"priority_classes: {threshold!r} is not a priority 0-100")

    def image(self, vendor: str) -> str:
        given = {"NVIDIA": self.image_nvidia, "AMD": self.image_amd}.get(vendor, self.image_cpu)
        tag = {"NVIDIA": "nvidia", "AMD": "amd"}.get(vendor, "cpu")
        return given or f"{self.registry.rstrip('/')}/warpforge:{tag}-{self.image_version}"
