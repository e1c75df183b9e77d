"""Shell completion: the bash and zsh scripts, and the hidden `__complete` they call.

The scripts only hand the words on the line to `warpforge-launch __complete SHELL CWORD
WORDS...` and show what it prints, so every command and option comes from the argparse
parser itself (a new subcommand completes without touching this file). The callback runs on
every Tab: it never parses the inventory through pydantic and never touches the network.
Scheduler and box names come from a cache keyed by the inventory's path, mtime and size
(a plain JSON/YAML read on a miss), job and sweep ids from one SQLite query on the job store.

Output: one candidate a line; or an `@files` / `@dirs` line asking the shell to complete
paths itself, then `@glob PATTERN` lines (only files matching one, and directories) and
words to offer besides the paths (`sweep <Tab>`: its subcommands and sweep files). An older
installed script reads only the first line of such a reply: it still completes all files.
"""

from __future__ import annotations

import json
import os
from typing import Any

# the store's own location functions: storefile imports nothing heavy
from warpforge_launch.storefile import home_dir as _state_dir
from warpforge_launch.storefile import store_file

BASH = r"""# warpforge-launch completion for bash: eval "$(warpforge-launch completion bash)"
_warpforge_launch_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} IFS=$'\n'
    local -a reply
    [[ $cur == = ]] && cur=
    reply=($("${COMP_WORDS[0]}" __complete bash "$COMP_CWORD" "${COMP_WORDS[@]}" 2>/dev/null)) \
        || return 0
    case ${reply[0]-} in
    @files | @dirs)
        local w f
        local -a globs=() words=()
        for w in "${reply[@]:1}"; do
            case $w in '@glob '*) globs+=("${w#@glob }") ;; *) words+=("$w") ;; esac
        done
        compopt -o filenames 2>/dev/null
        if [[ ${reply[0]} == @dirs || ${#globs[@]} -gt 0 ]]; then
            COMPREPLY=($(compgen -d -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        for w in "${globs[@]}"; do
            for f in $(compgen -f -X '!'"$w" -- "$cur"); do
                [[ -d $f ]] || COMPREPLY+=("$f")
            done
        done
        COMPREPLY+=("${words[@]}") ;;
    *) COMPREPLY=("${reply[@]}") ;;
    esac
}
complete -F _warpforge_launch_complete warpforge-launch
"""

ZSH = r"""#compdef warpforge-launch
# warpforge-launch completion for zsh: eval "$(warpforge-launch completion zsh)"
_warpforge_launch() {
    local -a reply globs extra
    local w ret=1
    reply=("${(@f)$("${words[1]}" __complete zsh $((CURRENT - 1)) "${words[@]}" 2>/dev/null)}")
    case ${reply[1]-} in
    @files | @dirs)
        for w in "${(@)reply[2,-1]}"; do
            if [[ $w == '@glob '* ]]; then globs+=("${w#@glob }"); else extra+=("$w"); fi
        done
        if [[ ${reply[1]} == @dirs ]]; then _files -/ && ret=0
        elif (( $#globs )); then _files -g "(${(j:|:)globs})" && ret=0
        else _files && ret=0
        fi
        if (( $#extra )); then compadd -Q -- "${extra[@]}" && ret=0; fi
        return ret ;;
    '') return 1 ;;
    *) compadd -Q -- "${reply[@]}" ;;
    esac
}
if (( ! $+functions[compdef] )); then autoload -Uz compinit && compinit; fi
compdef _warpforge_launch warpforge-launch
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}
RECENT = 100  # the newest job (or sweep) ids offered
_PATHS = {"inventory", "source", "snakegrinder", "token_file", "smoke_junit", "to", "file",
          "path", "dist"}


def script(shell: str) -> str:
    return SCRIPTS[shell]


# ---- names: inventory and job store, cheaply ----------------------------------------------
def _cached(path: str, key: Any, field: str) -> Any:
    """``field`` of a JSON cache file written with this ``key``, else None."""
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached[field]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None


def _inventory_path(words: list[str]) -> str | None:
    for i, w in enumerate(words):
        if w == "--inventory" and i + 1 < len(words):
            return os.path.expanduser(words[i + 1])
        if w.startswith("--inventory="):
            return os.path.expanduser(w.split("=", 1)[1])
    return find_inventory()


def find_inventory() -> str | None:
    """inventory.find()'s search order, without importing the inventory module."""
    env = os.environ.get("WARPFORGE_INVENTORY")
    if env:
        return env
    for candidate in ("inventory.yaml", os.path.expanduser("~/.config/warpforge/inventory.yaml")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _read_names(path: str) -> dict[str, list[str]]:
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
    else:
        import yaml

        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    doc = doc if isinstance(doc, dict) else {}
    scheds = doc.get("schedulers") if isinstance(doc.get("schedulers"), dict) else {}
    boxes = doc.get("boxes") if isinstance(doc.get("boxes"), dict) else {}
    labels: list[str] = []
    for name, box in boxes.items():
        labels.append(str(name))
        if isinstance(box, dict):
            for key in ("aliases", "groups"):
                if isinstance(box.get(key), list):
                    labels += [str(v) for v in box[key]]
    return {"schedulers": [str(s) for s in scheds], "boxes": list(dict.fromkeys(labels))}


def inventory_names(words: list[str]) -> dict[str, list[str]]:
    """Scheduler instances and box labels, from the cache while the file is unchanged."""
    path = _inventory_path(words)
    if path is None:
        return {"schedulers": ["local"], "boxes": ["local"]}  # the built-in default
    try:
        st = os.stat(path)
        key = [os.path.realpath(path), st.st_mtime_ns, st.st_size]
    except OSError:
        return {"schedulers": [], "boxes": []}
    cache = os.path.join(_state_dir(), "completion-cache.json")
    names = _cached(cache, key, "names")
    if names is not None:
        return names
    try:
        names = _read_names(path)
    except Exception:  # noqa: BLE001 - a broken inventory completes nothing, quietly
        return {"schedulers": [], "boxes": []}
    _write(cache, {"key": key, "names": names})
    return names


def job_ids(prefix: str = "") -> list[str]:
    """The newest job ids of the store."""
    return _recent("jobs", "job_id", prefix)


def sweep_ids(prefix: str = "") -> list[str]:
    """The newest sweep ids of the store (none in a store older than sweeps)."""
    return _recent("sweeps", "sweep_id", prefix)


def _recent(table: str, column: str, prefix: str) -> list[str]:
    """The newest ids of a store table (read-only: completing never creates the store)."""
    import sqlite3
    import urllib.parse

    db_path = store_file()
    if not os.path.exists(db_path):
        return []
    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(db_path)) + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=0.5)
        try:
            rows = db.execute(f"SELECT {column} FROM {table} WHERE {column} LIKE ? "
                              "ESCAPE '\\' ORDER BY submitted_at DESC LIMIT ?",
                              (_like(prefix) + "%", RECENT)).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    return [r[0] for r in rows]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---- the parser, as a plain spec -----------------------------------------------------------
def _kind(action) -> dict[str, Any] | None:
    """How to complete an option's value or a positional argument."""
    import argparse

    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return {"choices": [str(c) for c in action.choices]}
    names = f"{action.dest} {action.metavar or ''}".lower()
    if "sweep_id" in names:
        return {"kind": "sweeps"}
    if "job" in names:
        return {"kind": "jobs"}
    if "scheduler" in names:
        return {"kind": "schedulers"}
    if "box" in names:
        return {"kind": "boxes"}
    if "dir" in names.split("_") or (action.metavar or "").upper() == "DIR":
        return {"kind": "@dirs"}
    if (action.metavar or "").upper() == "FILE.YAML":
        return {"kind": "@files", "globs": ["*.yaml", "*.yml"]}
    if action.dest in _PATHS or (action.metavar or "").upper() in ("PATH", "FILE"):
        return {"kind": "@files"}
    return None


def spec_of(parser) -> dict[str, Any]:
    """What completion needs of an argparse parser, recursively, as JSON-able data."""
    import argparse

    spec: dict[str, Any] = {"options": {}, "positionals": [], "commands": {}, "visible": [],
                            # `sweep FILE` is `sweep submit FILE`: the command a first word
                            # that names no subcommand belongs to
                            "default": getattr(parser, "default_command", None)}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            shown = {c.dest for c in a._choices_actions}  # help=SUPPRESS hides a command
            spec["commands"] = {name: spec_of(p) for name, p in a.choices.items()}
            spec["visible"] = [name for name in a.choices if name in shown]
        elif a.option_strings:
            value = a.nargs != 0 and not isinstance(a, (argparse._HelpAction,
                                                        argparse._VersionAction))
            info = {"value": value, "append": isinstance(a, argparse._AppendAction),
                    "hidden": a.help is argparse.SUPPRESS, "complete": _kind(a)}
            for s in a.option_strings:
                spec["options"][s] = info
        else:
            spec["positionals"].append({"many": a.nargs in ("+", "*", argparse.REMAINDER),
                                        "complete": _kind(a)})
    return spec


def _package_key() -> list[Any]:
    """Changes whenever a module of the package does (a new command, a new option)."""
    import sys

    from warpforge_launch import __version__

    root = os.path.dirname(os.path.abspath(__file__))
    key: list[Any] = [__version__, list(sys.version_info[:2])]
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                key.append([os.path.relpath(os.path.join(d, f), root), st.st_mtime_ns,
                            st.st_size])
    return key


def parser_spec() -> dict[str, Any]:
    """The CLI's spec from the cache while no module changed, else from build_parser()."""
    key = _package_key()
    cache = os.path.join(_state_dir(), "completion-parser.json")
    spec = _cached(cache, key, "spec")
    if spec is not None:
        return spec
    from warpforge_launch.cli import build_parser

    spec = spec_of(build_parser())
    _write(cache, {"key": key, "spec": spec})
    return spec


def _write(path: str, data: Any) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _candidates(info: dict[str, Any] | None, cur: str, words: list[str]) -> list[str]:
    if not info:
        return []
    if "choices" in info:
        return info["choices"]
    kind = info["kind"]
    if kind == "jobs":
        return job_ids(cur)
    if kind == "sweeps":
        return sweep_ids(cur)
    if kind == "schedulers":
        return inventory_names(words)["schedulers"]
    if kind == "boxes":
        head, sep, _ = cur.rpartition(",")  # a comma-separated list: complete its last item
        chosen = set(head.split(",")) if sep else set()
        return [head + sep + b for b in inventory_names(words)["boxes"] if b not in chosen]
    return [kind] + [f"@glob {g}" for g in info.get("globs", [])]  # the shell completes paths


def _matching(found: list[str], cur: str) -> list[str]:
    if found[:1] in (["@files"], ["@dirs"]):
        return found
    return [v for v in found if v.startswith(cur)]


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    """The options of a command, and of its default subcommand (`sweep --dry-run FILE`)."""
    default = spec.get("default")
    return {**spec["commands"][default]["options"], **spec["options"]} if default else \
        spec["options"]


def _join_equals(words: list[str], cword: int) -> tuple[list[str], int]:
    """bash splits `--opt=value` into `--opt`, `=`, `value`: join them back (and the cursor)."""
    out: list[str] = []
    where: dict[int, int] = {}
    i = 0
    while i < len(words):
        if words[i] == "=" and out and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] += "="
            where[i] = len(out) - 1
            if i + 1 < len(words):
                out[-1] += words[i + 1]
                where[i + 1] = len(out) - 1
            i += 2
            continue
        out.append(words[i])
        where[i] = len(out) - 1
        i += 1
    return out, where.get(cword, len(out))


def complete(shell: str, cword: int, words: list[str],
             spec: dict[str, Any] | None = None) -> list[str]:
    if shell == "bash":
        words, cword = _join_equals(words, cword)
    words = words + [""] * (cword + 1 - len(words))
    cur = words[cword]
    spec = spec or parser_spec()
    positional = 0
    i = 1
    while i < cword:  # walk the words before the cursor: which (sub)command, which slot
        w = words[i]
        if w.startswith("-") and w != "-":
            info = _options(spec).get(w.split("=", 1)[0])
            if info is not None and info["value"] and "=" not in w:
                i += 1  # its value
        elif w in spec["commands"]:
            spec, positional = spec["commands"][w], 0
        elif spec.get("default"):  # the default subcommand's first argument
            spec, positional = spec["commands"][spec["default"]], 1
        else:
            positional += 1
        i += 1
    opts = _options(spec)
    prev = words[cword - 1] if cword > 1 else ""
    if cur.startswith("--") and "=" in cur:
        opt, _, value = cur.partition("=")
        found = _matching(_candidates(opts.get(opt, {}).get("complete"), value, words), value)
        if found[:1] in (["@files"], ["@dirs"]) or shell == "bash":
            return found
        return [f"{opt}={v}" for v in found]
    if prev in opts and opts[prev]["value"]:
        return _matching(_candidates(opts[prev]["complete"], cur, words), cur)
    if cur.startswith("-"):
        used = set(words[1:cword])
        return sorted(o for o, info in opts.items() if o.startswith(cur) and not info["hidden"]
                      and (o not in used or info["append"]))
    if spec["commands"]:
        commands = [c for c in spec["visible"] if c.startswith(cur)]
        default = spec["commands"].get(spec.get("default") or "")
        if not default or not default["positionals"]:
            return commands
        found = _matching(_candidates(default["positionals"][0]["complete"], cur, words), cur)
        return found + commands  # a directive (@files) stays first
    slots = spec["positionals"]
    if not slots or (positional >= len(slots) and not slots[-1]["many"]):
        return []
    return _matching(_candidates(slots[min(positional, len(slots) - 1)]["complete"], cur,
                                 words), cur)


def main(argv: list[str]) -> int:
    """`__complete SHELL CWORD WORDS...`: candidates on stdout; never an error on screen."""
    try:
        shell, cword, words = argv[0], int(argv[1]), list(argv[2:])
        for line in complete(shell, cword, words):
            print(line)
    except Exception:  # noqa: BLE001 - a Tab press must never print a traceback
        if os.environ.get("WARPFORGE_DEBUG"):
            raise
        return 1
    return 0
