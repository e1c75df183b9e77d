"""Shell completion: the bash and zsh scripts, and the hidden `__complete` they call.

The scripts only hand the words on the line to `warpforge-launch __complete SHELL CWORD
WORDS...` and show what it prints, so every command and option comes from the argparse
parser itself (a new subcommand completes without touching this file). The callback runs on
every Tab: it never parses the inventory through pydantic and never touches the network.
Scheduler and box names come from a cache keyed by the inventory's path, mtime and size
(a plain JSON/YAML read on a miss), job ids from one SQLite query on the job store.

Output: one candidate a line, or a single `@files` / `@dirs` line asking the shell to
complete paths itself.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

BASH = r"""# warpforge-launch completion for bash: eval "$(warpforge-launch completion bash)"
_warpforge_launch_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} IFS=$'\n'
    local -a reply
    [[ $cur == = ]] && cur=
    reply=($("${COMP_WORDS[0]}" __complete bash "$COMP_CWORD" "${COMP_WORDS[@]}" 2>/dev/null)) \
        || return 0
    case ${reply[0]-} in
    @files) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
    @dirs) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
    *) COMPREPLY=("${reply[@]}") ;;
    esac
}
complete -F _warpforge_launch_complete warpforge-launch
"""

ZSH = r"""#compdef warpforge-launch
# warpforge-launch completion for zsh: eval "$(warpforge-launch completion zsh)"
_warpforge_launch() {
    local -a reply
    reply=("${(@f)$("${words[1]}" __complete zsh $((CURRENT - 1)) "${words[@]}" 2>/dev/null)}")
    case ${reply[1]-} in
    @files) _files ;;
    @dirs) _files -/ ;;
    '') return 1 ;;
    *) compadd -Q -- "${reply[@]}" ;;
    esac
}
if (( ! $+functions[compdef] )); then autoload -Uz compinit && compinit; fi
compdef _warpforge_launch warpforge-launch
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}
JOB_LIMIT = 100  # the newest job ids offered
_PATHS = {"inventory", "source", "snakegrinder", "token_file", "smoke_junit", "to", "file",
          "path", "dist"}


def script(shell: str) -> str:
    return SCRIPTS[shell]


# ---- names: inventory and job store, cheaply ----------------------------------------------
def _state_dir() -> Path:
    """store.home(), without importing the store (its job model costs a Tab press ~50 ms)."""
    env = os.environ.get("WARPFORGE_HOME")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "warpforge-launch"


def _inventory_path(words: list[str]) -> Path | None:
    for i, w in enumerate(words):
        if w == "--inventory" and i + 1 < len(words):
            return Path(os.path.expanduser(words[i + 1]))
        if w.startswith("--inventory="):
            return Path(os.path.expanduser(w.split("=", 1)[1]))
    return find_inventory()


def find_inventory() -> Path | None:
    """inventory.find()'s search order, without importing the inventory module."""
    env = os.environ.get("WARPFORGE_INVENTORY")
    if env:
        return Path(env)
    for candidate in (Path("inventory.yaml"),
                      Path(os.path.expanduser("~/.config/warpforge/inventory.yaml"))):
        if candidate.is_file():
            return candidate
    return None


def _read_names(path: Path) -> dict[str, list[str]]:
    text = path.read_text()
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
        st = path.stat()
        key = [str(path.resolve()), st.st_mtime_ns, st.st_size]
    except OSError:
        return {"schedulers": [], "boxes": []}
    cache = _state_dir() / "completion-cache.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["names"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        names = _read_names(path)
    except Exception:  # noqa: BLE001 - a broken inventory completes nothing, quietly
        return {"schedulers": [], "boxes": []}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "names": names}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return names


def job_ids(prefix: str = "") -> list[str]:
    """The newest job ids of the store (read-only: completing never creates the store)."""
    import sqlite3

    db_path = _state_dir() / "jobs.sqlite3"
    if not db_path.exists():
        return []
    try:
        db = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            rows = db.execute("SELECT job_id FROM jobs WHERE job_id LIKE ? ESCAPE '\\' "
                              "ORDER BY submitted_at DESC LIMIT ?",
                              (_like(prefix) + "%", JOB_LIMIT)).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    return [r[0] for r in rows]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---- the parser, walked -------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._HelpAction,
                                                         argparse._VersionAction))


def _visible_commands(sub) -> list[str]:
    shown = {a.dest for a in sub._choices_actions}  # help=SUPPRESS leaves a command out
    return [name for name in sub.choices if name in shown]


def _values(action: argparse.Action, cur: str, words: list[str]) -> list[str]:
    """Candidates for an option's value or a positional argument."""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return [str(c) for c in action.choices]
    names = f"{action.dest} {action.metavar or ''}".lower()
    if "job" in names and "sweep" not in names:
        return job_ids(cur)
    if "scheduler" in names:
        return inventory_names(words)["schedulers"]
    if "box" in names:
        head, sep, _ = cur.rpartition(",")  # a comma-separated list: complete its last item
        chosen = set(head.split(",")) if sep else set()
        return [head + sep + b for b in inventory_names(words)["boxes"] if b not in chosen]
    if "dir" in names.split("_") or (action.metavar or "").upper() == "DIR":
        return ["@dirs"]
    if action.dest in _PATHS or (action.metavar or "").upper() in ("PATH", "FILE", "FILE.YAML"):
        return ["@files"]
    return []


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


def complete(shell: str, cword: int, words: list[str]) -> list[str]:
    from warpforge_launch.cli import build_parser

    if shell == "bash":
        words, cword = _join_equals(words, cword)
    words = words + [""] * (cword + 1 - len(words))
    cur = words[cword]
    parser = build_parser()
    positional = 0
    i = 1
    while i < cword:  # walk the words before the cursor: which (sub)parser, which slot
        w = words[i]
        opts = _options(parser)
        if w.startswith("-") and w != "-":
            action = opts.get(w.split("=", 1)[0])
            if action is not None and _takes_value(action) and "=" not in w:
                i += 1  # its value
        else:
            sub = _subparsers(parser)
            if sub is not None and w in sub.choices:
                parser, positional = sub.choices[w], 0
            else:
                positional += 1
        i += 1
    opts = _options(parser)
    prev = words[cword - 1] if cword > 0 else ""
    if cur.startswith("--") and "=" in cur:
        opt, _, value = cur.partition("=")
        action = opts.get(opt)
        found = _values(action, value, words) if action is not None else []
        if found[:1] in (["@files"], ["@dirs"]):
            return found
        matches = [v for v in found if v.startswith(value)]
        return matches if shell == "bash" else [f"{opt}={v}" for v in matches]
    if prev in opts and _takes_value(opts[prev]) and cword - 1 >= 1:
        found = _values(opts[prev], cur, words)
        return found if found[:1] in (["@files"], ["@dirs"]) else [
            v for v in found if v.startswith(cur)]
    if cur.startswith("-"):
        used = set(words[1:cword])
        return sorted(o for o, a in opts.items() if o.startswith(cur) and (
            o not in used or isinstance(a, argparse._AppendAction))
            and a.help is not argparse.SUPPRESS)
    sub = _subparsers(parser)
    if sub is not None:
        return [c for c in _visible_commands(sub) if c.startswith(cur)]
    slots = [a for a in parser._actions if not a.option_strings]
    if not slots:
        return []
    action = slots[min(positional, len(slots) - 1)]
    if positional >= len(slots) and action.nargs not in ("+", "*", argparse.REMAINDER):
        return []
    found = _values(action, cur, words)
    return found if found[:1] in (["@files"], ["@dirs"]) else [
        v for v in found if v.startswith(cur)]


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
