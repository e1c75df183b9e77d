"""What the vendors' GPU tools print, read into one record per GPU.

Three formats, each as the vendor documents it:
- `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`: one comma-separated line per
  GPU in the order of QUERY_FIELDS; a value the GPU cannot report is `[N/A]`, `N/A` or
  `[Not Supported]` (older drivers).
- `rocm-smi ... --json`: one object per card (`card0`, ...) whose keys are the labels of the
  text output (`GPU use (%)`, `VRAM Total Memory (B)`, ...), every value a string; the driver
  version sits under `system`; an unsupported value is `N/A` or left out.
- `amd-smi list|static|metric --json`: a list with one object per GPU (`"gpu": N`), newer
  releases wrapped in `{"gpu_data": [...]}`; numbers come as `{"value": V, "unit": U}`,
  unsupported ones as `"N/A"`; memory in MB of 1024*1024 bytes.
The remote script (SCRIPT) runs the right tool and marks each output, so one SSH command per
box reads everything.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

QUERY_FIELDS = ("index", "name", "uuid", "driver_version", "memory.total", "memory.used",
                "utilization.gpu", "temperature.gpu")
NVIDIA_ARGV = ("nvidia-smi", "--query-gpu=" + ",".join(QUERY_FIELDS),
               "--format=csv,noheader,nounits")
ROCM_SMI_ARGV = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuse",
                 "--showtemp", "--showdriverversion", "--showuniqueid", "--json")
AMD_SMI_ARGVS = {"amd-smi-list": ("amd-smi", "list", "--json"),
                 "amd-smi-static": ("amd-smi", "static", "--asic", "--driver", "--vram",
                                    "--json"),
                 "amd-smi-metric": ("amd-smi", "metric", "--usage", "--temperature",
                                    "--mem-usage", "--json")}
MARK = "@@wf-gpu "
EXIT_MARK = "@@wf-gpu-exit "
#: Where vendors install their tools outside a non-login shell's PATH (ROCm: /opt/rocm/bin).
DEFAULT_TOOL_PATH = ("/opt/rocm/bin",)

# Runs on the box: $1 extra PATH entries, $2 the inventory's vendor (NVIDIA, AMD, else both
# are tried). Each tool's output follows a MARK line and ends with its exit status.
SCRIPT = r"""
PATH="$PATH${1:+:$1}"; export PATH
has() { command -v "$1" >/dev/null 2>&1; }
run() { printf '\n@@wf-gpu %s\n' "$1"; shift; "$@" </dev/null; printf '\n@@wf-gpu-exit %s\n' "$?"; }
nv() { run nvidia-smi {nvidia}; }
amd() {
  if has rocm-smi; then run rocm-smi {rocm}
  elif has amd-smi; then
    run amd-smi-list {amd_list}; run amd-smi-static {amd_static}
    run amd-smi-metric {amd_metric}
  fi
}
case $2 in
NVIDIA) if has nvidia-smi; then nv; fi ;;
AMD) amd ;;
*) if has nvidia-smi; then nv; fi; amd ;;
esac
exit 0
"""


def _script() -> str:
    import shlex

    words = {"nvidia": NVIDIA_ARGV, "rocm": ROCM_SMI_ARGV,
             **{k.replace("-smi-", "_").replace("-", "_"): v for k, v in AMD_SMI_ARGVS.items()}}
    text = SCRIPT
    for key, argv in words.items():
        text = text.replace("{" + key + "}", shlex.join(argv))
    return text


SCRIPT = _script()


class GpuParseError(ValueError):
    """A tool printed something that is not its documented format."""


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU of one box; None where the tool could not say."""

    box: str
    vendor: str  # NVIDIA or AMD
    index: int
    name: str | None
    uuid: str | None
    driver: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization_pct: float | None
    temperature_c: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def script_argv(vendor: str, tool_path: tuple[str, ...] = DEFAULT_TOOL_PATH) -> list[str]:
    """The argv that runs SCRIPT (for SSH: shlex.join of it)."""
    return ["sh", "-c", SCRIPT, "wf-gpu", ":".join(tool_path), vendor]


def split_sections(text: str) -> dict[str, tuple[int | None, str]]:
    """SCRIPT's output -> {tool: (exit status or None if cut off, output)}."""
    sections: dict[str, tuple[int | None, str]] = {}
    name, lines = None, []
    for line in text.splitlines():
        if line.startswith(MARK):
            name, lines = line[len(MARK):].strip(), []
        elif line.startswith(EXIT_MARK) and name is not None:
            code = line[len(EXIT_MARK):].strip()
            sections[name] = (int(code) if code.isdigit() else None, "\n".join(lines).strip())
            name = None
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = (None, "\n".join(lines).strip())
    return sections


# ---- values ---------------------------------------------------------------------------------
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    text = str(value).strip()
    return (not text or text.upper() in ("N/A", "NA", "NONE", "UNKNOWN")
            or (text.startswith("[") and text.endswith("]")))  # [N/A], [Not Supported], ...


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value).strip()


def _number(value: Any) -> float | None:
    """A number from 42, "42.0", "42 %", {"value": 42, "unit": "%"}; None if not reported."""
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or _missing(value):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _NUMBER.match(str(value).strip())
    if not m:
        raise GpuParseError(f"not a number: {value!r}")
    return float(m.group())


def _int(value: Any) -> int | None:
    n = _number(value)
    return None if n is None else int(n)


def _mib_from_bytes(value: Any) -> int | None:
    n = _number(value)
    return None if n is None else int(n // (1024 * 1024))


# ---- nvidia-smi -----------------------------------------------------------------------------
def parse_nvidia(text: str, box: str) -> list[Gpu]:
    """nvidia-smi's CSV, one line per GPU (a comma in a name is kept: the other seven
    fields never hold one)."""
    gpus = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < len(QUERY_FIELDS):
            raise GpuParseError(f"nvidia-smi line {n}: {len(fields)} fields, expected "
                                f"{len(QUERY_FIELDS)}: {line.strip()[:120]!r}")
        extra = len(fields) - len(QUERY_FIELDS)
        fields = [fields[0], ", ".join(fields[1:2 + extra]), *fields[2 + extra:]]
        index, name, uuid, driver, total, used, util, temp = fields
        try:
            idx = _int(index)
            gpus.append(Gpu(box, "NVIDIA", idx if idx is not None else n - 1, _text(name),
                            _text(uuid), _text(driver), _int(total), _int(used), _number(util),
                            _number(temp)))
        except GpuParseError as e:
            raise GpuParseError(f"nvidia-smi line {n}: {e}") from None
    return gpus


# ---- rocm-smi -------------------------------------------------------------------------------
def _get(d: Mapping[str, Any], *keys: str) -> Any:
    """The first key present, case-insensitively (labels changed case between releases)."""
    lowered = {k.lower(): v for k, v in d.items()}
    for k in keys:
        if k.lower() in lowered:
            return lowered[k.lower()]
    return None


def _load_json(text: str, tool: str) -> Any:
    found = re.search(r"^[ \t]*[\[{]", text, re.M)  # releases may warn on a line before it
    start = found.start() if found else -1
    if start < 0:
        raise GpuParseError(f"{tool} printed no JSON: {text.strip()[:120]!r}")
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError as e:
        raise GpuParseError(f"{tool} printed invalid JSON: {e}") from None


def parse_rocm_smi(text: str, box: str) -> list[Gpu]:
    data = _load_json(text, "rocm-smi")
    if not isinstance(data, dict):
        raise GpuParseError("rocm-smi JSON is not an object of cards")
    system = data.get("system") if isinstance(data.get("system"), dict) else {}
    driver = _text(_get(system, "Driver version"))
    gpus = []
    cards = [(k, v) for k, v in data.items() if re.fullmatch(r"card\d+", k) and isinstance(v, dict)]
    for key, card in sorted(cards, key=lambda kv: int(kv[0][4:])):
        temp = _get(card, "Temperature (Sensor edge) (C)", "Temperature (Sensor junction) (C)",
                    "Temperature (Sensor memory) (C)")
        try:
            gpus.append(Gpu(
                box, "AMD", int(key[4:]),
                _text(_get(card, "Card Series", "Card series", "Device Name", "Card Model")),
                _text(_get(card, "Unique ID")), driver,
                _mib_from_bytes(_get(card, "VRAM Total Memory (B)")),
                _mib_from_bytes(_get(card, "VRAM Total Used Memory (B)")),
                _number(_get(card, "GPU use (%)")), _number(temp)))
        except GpuParseError as e:
            raise GpuParseError(f"rocm-smi {key}: {e}") from None
    return gpus


# ---- amd-smi --------------------------------------------------------------------------------
def _per_gpu(text: str | None, tool: str) -> dict[int, Mapping[str, Any]]:
    if text is None:
        return {}
    data = _load_json(text, tool)
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    if not isinstance(data, list):
        raise GpuParseError(f"{tool} JSON is not a list of GPUs")
    out = {}
    for i, item in enumerate(data):
        if isinstance(item, dict):
            gpu = item.get("gpu", i)
            out[int(gpu) if str(gpu).isdigit() else i] = item
    return out


def _sub(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d.get(key)
    return v if isinstance(v, Mapping) else {}


def _mib(value: Any) -> int | None:
    """amd-smi memory: {"value": N, "unit": "MB"} (MiB), or "N MB"; GB/KB/B converted."""
    n = _number(value)
    if n is None:
        return None
    unit = (value.get("unit") if isinstance(value, Mapping) else
            str(value).strip()[len(_NUMBER.match(str(value).strip()).group()):]).strip().upper()
    scale = {"B": 1 / 1024 ** 2, "KB": 1 / 1024, "GB": 1024}.get(unit, 1)
    return int(n * scale)


def parse_amd_smi(listing: str | None, static: str | None, metric: str | None,
                  box: str) -> list[Gpu]:
    lists, statics, metrics = (_per_gpu(listing, "amd-smi list"),
                               _per_gpu(static, "amd-smi static"),
                               _per_gpu(metric, "amd-smi metric"))
    gpus = []
    for idx in sorted(set(lists) | set(statics) | set(metrics)):
        s, m = statics.get(idx, {}), metrics.get(idx, {})
        temps, mem = _sub(m, "temperature"), _sub(m, "mem_usage")
        try:
            total = _mib(mem.get("total_vram"))
            if total is None:
                total = _mib(_sub(s, "vram").get("size"))
            gpus.append(Gpu(
                box, "AMD", idx, _text(_sub(s, "asic").get("market_name")),
                _text(lists.get(idx, {}).get("uuid")), _text(_sub(s, "driver").get("version")),
                total, _mib(mem.get("used_vram")),
                _number(_sub(m, "usage").get("gfx_activity")),
                _number(temps.get("edge")) if _number(temps.get("edge")) is not None
                else _number(temps.get("hotspot"))))
        except GpuParseError as e:
            raise GpuParseError(f"amd-smi gpu {idx}: {e}") from None
    return gpus


def parse_sections(sections: Mapping[str, tuple[int | None, str]], box: str
                   ) -> tuple[str | None, list[Gpu], str | None]:
    """(tool, GPUs, error) from split_sections; tool None: no GPU tool on the box."""
    tool, gpus, errors = None, [], []
    if "nvidia-smi" in sections:
        tool = "nvidia-smi"
        code, out = sections["nvidia-smi"]
        if code == 0:
            gpus += parse_nvidia(out, box)
        elif code is None:
            errors.append("nvidia-smi output was cut off (no exit status)")
        else:
            errors.append(f"nvidia-smi exited {code}: {_first_line(out)}")
    if "rocm-smi" in sections:
        tool = "rocm-smi" if tool is None else f"{tool}+rocm-smi"
        code, out = sections["rocm-smi"]
        try:  # rocm-smi exits non-zero when any one value is unsupported: trust its JSON
            gpus += parse_rocm_smi(out, box)
        except GpuParseError as e:
            errors.append(f"rocm-smi exited {code}: {e}" if code else str(e))
    if any(k.startswith("amd-smi") for k in sections):
        tool = "amd-smi" if tool is None else f"{tool}+amd-smi"
        parts = {k: (v[1] if v[0] == 0 else None) for k, v in sections.items()}
        failed = [k for k, v in sections.items() if k.startswith("amd-smi") and v[0] != 0]
        if failed:
            code, out = sections[failed[0]]
            errors.append(f"amd-smi {failed[0][len('amd-smi-'):]} exited {code}: "
                          f"{_first_line(out)}")
        else:
            gpus += parse_amd_smi(parts.get("amd-smi-list"), parts.get("amd-smi-static"),
                                  parts.get("amd-smi-metric"), box)
    return tool, gpus, "; ".join(errors) or None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:200] if lines else "no output"
