"""The one place a JobDefinition becomes the snakegrinder command line.

Every backend runs this argv: as a process (Local), inside a container (Slurm, Kubernetes)
or through a shell (Ray, sbatch) as ``shlex.join(argv)`` - never pasted strings.
"""

from __future__ import annotations

from warpforge_launch.inputs import to_snakegrinder
from warpforge_launch.jobs import JobDefinition, JobType

# STABLEHLO_ONLY stops at the graph (no values); the other two also run the model and keep
# inputs, weights and outputs, which is what --trace-with-values writes.
_MODE = {
    JobType.FULL_PIPELINE: "--trace-with-values",
    JobType.PYTORCH_NATIVE: "--trace-with-values",
    JobType.STABLEHLO_ONLY: "--trace",
}


def snakegrinder_argv(binary: str, definition: JobDefinition, out_dir: str) -> list[str]:
    argv = [binary, _MODE[definition.type], "--source", definition.source]
    if definition.model_class:
        argv += ["--class", definition.model_class]
    argv += ["--inputs", to_snakegrinder(definition.inputs),
             "--seed", str(definition.seed), "--out", out_dir]
    return argv
