"""Decision: what a push does on one box, as a pure function of its facts and the manifest.

`decide` never touches a box. It says whether the box is already current (nothing sent),
whether an earlier release of the same tree can be switched back to, or which files to send
and which to hard-link from the current release, what the box must verify before the switch
and what to prune after it. Files are linked only when the current release's record says
they are identical and the box reports them unchanged since they were last verified; when
that cannot be known, the linked files are verified too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from warpforge_launch.errors import UsageError
from warpforge_launch.lab.boxstate import BoxState
from warpforge_launch.lab.manifest import Entry, Manifest

UNCHANGED, CHECK, REACTIVATE, PUSH = "unchanged", "check", "reactivate", "push"


@dataclasses.dataclass(frozen=True)
class Decision:
    action: str  # unchanged | check (verify current in full) | reactivate | push
    release: str  # the release that will be current
    link_from: str | None = None  # push: the release unchanged files are hard-linked from
    link: tuple[Entry, ...] = ()
    send: tuple[Entry, ...] = ()
    verify: tuple[Entry, ...] = ()  # files the box checks before it switches
    prune: tuple[str, ...] = ()  # our releases to delete after the switch
    why: str = ""

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.send)


def release_hash(name: str) -> str:
    return name.split(".", 1)[0]


def refuse_foreign(box: str, install_dir: str, state: BoxState) -> None:
    """UsageError when the install dir holds a `current` or `bin` the tool did not make."""
    for name, foreign in (("current", state.current_foreign), ("bin", state.bin_foreign)):
        if foreign:
            raise UsageError(
                f"box {box}: {install_dir}/{name} exists and was not made by warpforge: "
                "not touching it", hint="move it away yourself, or choose another "
                                        "install_dir for this box")


def is_current(state: BoxState, m: Manifest, bad: Collection[str] = ()) -> bool:
    """The current release is m's tree, holds exactly m's files with their sizes, and no
    file changed since it was verified."""
    return bool(state.current and release_hash(state.current) == m.hash
                and state.current not in bad and state.listing == m.listing
                and state.changed == [])


def decide(state: BoxState, m: Manifest, *, keep: int, suffix: str, verify_all: bool = False,
           check_current: bool = False, bad: Collection[str] = (),
           damaged: Collection[str] = ()) -> Decision:
    """The push that brings the box to m.

    suffix: makes a fresh release name when m's hash is taken (a damaged copy, or a foreign
    directory). bad: releases known to fail verification (never reused, pruned). damaged:
    files of the current release known to differ (from a full check): sent, never linked.
    check_current: verify an otherwise current release in full (--verify / --repair)."""
    if is_current(state, m, bad) and not damaged:
        if check_current:
            return Decision(CHECK, state.current, verify=tuple(m.files), why="verify all")
        return Decision(UNCHANGED, state.current, why="current, unchanged since verified")
    same = [r for r in [*reversed(state.history), *sorted(state.releases)]
            if r in state.releases and release_hash(r) == m.hash
            and r != state.current and r not in bad]
    if same:
        rel = same[0]
        return Decision(REACTIVATE, rel, verify=tuple(m.files),
                        prune=tuple(plan_prune(state, rel, keep, bad)), why="earlier release")
    taken = {*state.releases, *state.foreign, *state.partials}
    rel = m.hash if m.hash not in taken else f"{m.hash}.{suffix}"
    link, send, trusted = split(m, state, bad, damaged)
    verify = tuple(m.files) if verify_all else send + (() if trusted else link)
    prune = plan_prune(state, rel, keep, bad)
    if state.current and release_hash(state.current) == m.hash and state.current not in prune:
        prune.append(state.current)  # a damaged copy of the same tree: no use as a rollback
    return Decision(PUSH, rel, link_from=state.current if link else None, link=link, send=send,
                    verify=verify, prune=tuple(prune),
                    why="new tree" if release_hash(state.current or "") != m.hash else "repair")


def split(m: Manifest, state: BoxState, bad: Collection[str] = (),
          damaged: Collection[str] = ()) -> tuple[tuple[Entry, ...], tuple[Entry, ...], bool]:
    """(files to link from current, files to send, whether the linked ones are trusted).

    A file is linked when current's record has it identical (content, mode), the box has it
    at that size and does not report it changed since verification."""
    old = state.manifest
    if not state.current or old is None or state.current in bad:
        return (), tuple(m.files), True
    known = old.by_path()
    suspect = set(state.changed or ()) | set(damaged)
    link, send = [], []
    for e in m.files:
        o = known.get(e.path)
        same = (o is not None and o.kind == "f" and o.sha256 == e.sha256 and o.mode == e.mode
                and state.sizes.get(e.path) == e.size and e.path not in suspect)
        (link if same else send).append(e)
    intact = {p: n for p, n in state.sizes.items() if not p.startswith(".warpforge-")} == {
        e.path: e.size for e in old.files}
    trusted = state.changed is not None and not suspect and intact
    return tuple(link), tuple(send), trusted


def plan_prune(state: BoxState, new: str, keep: int, bad: Collection[str] = ()) -> list[str]:
    """Our releases to delete after switching to `new`: keep the `keep` most recently current
    (always the new one and the one before it), delete the rest and any known bad."""
    order: list[str] = []
    for name in [new, state.current, *reversed(state.history)]:
        if name and name not in order and (name == new or name in state.releases) \
                and (name == new or name not in bad):
            order.append(name)
    for name in sorted(state.releases):  # releases never switched to: oldest to go first
        if name not in order and name not in bad:
            order.append(name)
    gone = order[keep:] + [b for b in bad if b in state.releases and b != new]
    return [n for n in gone if n != new]


def rollback_target(box: str, state: BoxState, to: str | None) -> str:
    if to:
        hits = [n for n in state.releases if n.startswith(to)]
        if len(hits) != 1:
            raise UsageError(f"box {box}: release {to!r} matches {len(hits)} releases",
                             hint=f"releases on the box: {', '.join(state.releases) or 'none'}")
        return hits[0]
    for name in reversed(state.history):
        if name != state.current and name in state.releases:
            return name
    raise UsageError(f"box {box}: no earlier release to roll back to",
                     hint=f"current: {state.current or 'none'}")
