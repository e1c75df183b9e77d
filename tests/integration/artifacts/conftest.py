"""The lab fixtures the fetch tests share with the backends' own tests: the Ray head with
its shared output root, the Slurm cluster with its shared work dir and SSH login node."""

from __future__ import annotations

import pytest

from tests.integration.ray import conftest as _ray
from tests.integration.slurm import conftest as _slurm  # exports SLURM_CONF on import

ray_head = _ray.ray_head
ray_workdir = _ray.ray_workdir
fake_snakegrinder = _ray.fake_snakegrinder
output_root = _ray.output_root
slurm_cluster = _slurm.slurm_cluster
shared_dir = _slurm.shared_dir
login_node = _slurm.login_node


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration/artifacts" in str(item.fspath):
            name = item.name
            if "ray" in name:
                item.add_marker(pytest.mark.ray)
            if "slurm" in name:
                item.add_marker(pytest.mark.slurm)
