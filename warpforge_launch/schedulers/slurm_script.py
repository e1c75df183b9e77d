"""Render the sbatch script of a job: a pure function of a ``ScriptSpec``.

Quoting is the whole point of this module. sbatch reads ``#SBATCH`` lines with its own
little parser (double quotes group, backslash escapes, ``#`` outside quotes starts a
comment), and bash reads the body; each gets its own filter, and a value that could escape
either (a newline, a NUL) is refused with ``ScriptError`` instead of being "cleaned".
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Where payload_argv's output directory goes; NUL cannot occur in a real argument, so no
# user value can forge it. It renders as "$OUT_DIR" (= <work dir>/output-$SLURM_JOB_ID).
OUT_DIR_TOKEN = "\0WARPFORGE_OUT_DIR\0"
RUNTIMES = ("singularity", "apptainer", "none")
_SAFE_SBATCH = re.compile(r"^[A-Za-z0-9_./:=,+%@-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ScriptError(ValueError):
    """A value cannot be put into an sbatch script safely (bad input, exit 2)."""


@dataclass(frozen=True)
class ScriptSpec:
    """Everything the template needs, already mapped from the job to Slurm terms."""

    correlation_id: str
    name: str
    job_name: str
    work_dir: str
    cpus: int
    mem_mb: int
    time_minutes: int
    argv: tuple[str, ...]
    runtime: str = "none"
    gpu_type: str = "NONE"                  # NONE | NVIDIA | AMD | ANY
    gpu_count: int = 0
    images: dict[str, str] = field(default_factory=dict)   # vendor -> image path
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nice: int | None = None
    nodelist: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    extra_options: tuple[str, ...] = ()
    secret_env: tuple[str, ...] = ()        # names only: values reach sbatch's environment

    def to_dict(self) -> dict:
        """JSON form (secret-free: secret_env holds names)."""
        import json
        from dataclasses import asdict

        d = asdict(self)
        d["argv"] = [a.replace(OUT_DIR_TOKEN, "$OUT_DIR") for a in self.argv]
        return json.loads(json.dumps(d))  # tuples as lists, as the store keeps them

    @property
    def gres(self) -> str | None:
        if self.gpu_type == "NONE" or self.gpu_count <= 0:
            return None
        if self.gpu_type == "ANY":
            return f"gpu:{self.gpu_count}"
        return f"gpu:{self.gpu_type.lower()}:{self.gpu_count}"

    @property
    def gpu_flag(self) -> str | None:
        return {"NVIDIA": "--nv", "AMD": "--rocm"}.get(self.gpu_type)

    @property
    def image(self) -> str | None:
        key = {"NVIDIA": "nvidia", "AMD": "amd"}.get(self.gpu_type, "cpu")
        return self.images.get(key) or self.images.get("nvidia")

    def slurm_path(self, leaf: str) -> str:
        """A path for --output/--error: '%' is literal in the work dir, so it is doubled."""
        return self.work_dir.replace("%", "%%") + "/" + leaf


def sbatch_arg(value: object) -> str:
    """Quote one value for an ``#SBATCH`` line the way sbatch's own parser reads it."""
    text = str(value)
    if _CONTROL.search(text):
        raise ScriptError(f"control character (newline, NUL, ...) in sbatch value {text!r}")
    if _SAFE_SBATCH.match(text):
        return text
    if "=" in text and text.startswith("-") and _SAFE_SBATCH.match(text.split("=", 1)[0]):
        opt, val = text.split("=", 1)   # extra options: keep "--opt=" bare, quote the value
        return f"{opt}={sbatch_arg(val)}"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sh(value: object) -> str:
    """One shell word. NUL cannot be passed to a program at all: refuse it."""
    text = str(value)
    if "\0" in text:
        raise ScriptError(f"NUL character in value {text!r}")
    return shlex.quote(text)


def sh_argv(argv) -> str:
    """A whole argv as shell words; the output-dir token becomes "$OUT_DIR" (expanded by bash
    at run time, inside double quotes so it is never split or globbed)."""
    words = []
    for arg in argv:
        parts = str(arg).split(OUT_DIR_TOKEN)
        if any("\0" in p for p in parts):
            raise ScriptError(f"NUL character in argument {arg!r}")
        word = '"$OUT_DIR"'.join(shlex.quote(p) if p else "" for p in parts)
        words.append(word or "''")
    return " ".join(words)


_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_nodes(nodes) -> tuple[str, ...]:
    """Node affinity names must be plain host names: a ',' or '[' would widen the nodelist."""
    out = tuple(sorted(str(n) for n in nodes))
    for n in out:
        if not _NODE.match(n):
            raise ScriptError(f"invalid node name in node affinity: {n!r}")
    return out


def comment(value: object) -> str:
    """Text for a ``#`` comment line: a newline would end the comment and start code, so
    control characters become '?'."""
    return _CONTROL.sub("?", str(value))


def env_name(value: object) -> str:
    text = str(value)
    if not _ENV_NAME.match(text):
        raise ScriptError(f"invalid environment variable name {text!r}")
    return text


# Names that would change how sbatch itself (or the shell around it) runs on the login node.
_SBATCH_OWN = re.compile(r"^(SBATCH_|SLURM_|LD_|BASH_FUNC_)|^(PATH|BASH_ENV|ENV|IFS|SHELLOPTS|"
                         r"BASHOPTS|PS4|HOME|TMPDIR)$")


def secret_name(value: object) -> str:
    """A --secret-env name: it reaches the job through sbatch's own environment, so it must
    be a plain variable name that does not steer sbatch or the submitting shell."""
    text = env_name(value)
    if _SBATCH_OWN.match(text):
        raise ScriptError(f"--secret-env {text}: this name would change how sbatch runs on "
                          "the login node; use another name")
    return text


def require_env(value: object) -> str:
    """A shell line that stops the job when a secret did not arrive (e.g. --export=NONE)."""
    name = secret_name(value)
    return f': "${{{name}?secret environment variable {name} did not reach the job}}"'


def validate_work_dir(path: str) -> str:
    """The remote work dir: absolute, no control characters, backslashes, commas or colons
    (the last two would split a container --bind spec; a backslash turns off sbatch's
    filename patterns, so output-%j would not expand)."""
    if not path.startswith("/"):
        raise ScriptError(f"work_dir must be an absolute path, got {path!r}")
    if "$" in path:
        raise ScriptError(f"work_dir {path!r}: $USER is the only variable it may use")
    if _CONTROL.search(path) or any(c in path for c in "\\,:"):
        raise ScriptError(f"work_dir {path!r} contains a control character, backslash, ',' or ':'")
    return path.rstrip("/") or "/"


@lru_cache(maxsize=1)
def _template():
    import jinja2  # lazy: only plan/submit need it

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=False, lstrip_blocks=False,
    )
    env.filters.update(sbatch_arg=sbatch_arg, sh=sh, sh_argv=sh_argv, env_name=env_name,
                       comment=comment, secret_name=secret_name, require_env=require_env)
    return env.from_string(template_text())


def template_text() -> str:
    """The template from the wheel (force-included) or from the source tree."""
    try:
        packaged = resources.files("warpforge_launch").joinpath("templates/sbatch.sh.j2")
        if packaged.is_file():
            return packaged.read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return (Path(__file__).resolve().parents[2] / "templates" / "sbatch.sh.j2").read_text()


def render(spec: ScriptSpec) -> str:
    """The script text; raises ScriptError when a value cannot be quoted safely."""
    if spec.runtime not in RUNTIMES:
        raise ScriptError(f"unknown container runtime {spec.runtime!r} "
                          f"(one of {', '.join(RUNTIMES)})")
    work_dir = validate_work_dir(spec.work_dir)
    for label, value in (("cpus", spec.cpus), ("mem_mb", spec.mem_mb),
                         ("time_minutes", spec.time_minutes)):
        if not isinstance(value, int) or value <= 0:
            raise ScriptError(f"{label} must be a positive integer, got {value!r}")
    if spec.runtime != "none" and spec.image is None and spec.gpu_type != "ANY":
        raise ScriptError(f"no container image configured for GPU type {spec.gpu_type}")
    if spec.runtime != "none" and spec.gpu_type == "ANY" and not (
            spec.images.get("nvidia") and spec.images.get("amd")):
        raise ScriptError("GPU type ANY needs both an NVIDIA and an AMD image configured")
    return _template().render(
        correlation_id=spec.correlation_id, name=spec.name, job_name=spec.job_name,
        work_dir=work_dir, output_pattern=spec.slurm_path("warpforge-%j.out"),
        error_pattern=spec.slurm_path("warpforge-%j.err"), partition=spec.partition,
        account=spec.account, qos=spec.qos, nice=spec.nice, cpus=spec.cpus, mem_mb=spec.mem_mb,
        gres=spec.gres, nodelist=list(validate_nodes(spec.nodelist)),
        time_minutes=spec.time_minutes,
        extra_options=list(spec.extra_options), environment=list(spec.environment),
        runtime=spec.runtime, gpu_type=spec.gpu_type, gpu_flag=spec.gpu_flag,
        image=spec.image, images=_Images(spec.images), argv=list(spec.argv),
        secret_env=list(spec.secret_env),
    )


class _Images(dict):
    """images.nvidia / images.amd in the template; a missing one renders nothing usable."""

    def __getattr__(self, key):
        return self.get(key, "")
