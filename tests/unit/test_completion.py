"""Shell completion, run for real: bash (and zsh when installed) source the generated script
and call its completion function with the words a user typed; the candidates come back from
the hidden `__complete` callback in a fresh process, as they do on a Tab press."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, local_inventory, model_file, run_cli
from warpforge_launch import completion

ZSH = shutil.which("zsh")


@pytest.fixture
def shell_env(tmp_path, _private_home):
    """A PATH whose `warpforge-launch` is this checkout (what `pip install` would give)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "warpforge-launch"
    exe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m warpforge_launch \"$@\"\n")
    exe.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "WARPFORGE_HOME": str(_private_home), "HOME": str(tmp_path)}
    return env


@pytest.fixture
def lab_inventory(tmp_path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "version: 1\n"
        "default_scheduler: local\n"
        "schedulers:\n"
        "  local: {type: local}\n"
        "  slurm_a: {type: slurm, login_host: 127.0.0.1}\n"
        "boxes:\n"
        "  nvidia: {address: 127.0.0.21, aliases: [mark1nvidia], groups: [gpu-boxes]}\n"
        "  amd: {address: 127.0.0.22}\n")
    return path


def bash(words: list[str], cword: int, env: dict, cwd=None) -> list[str]:
    script = ('eval "$(warpforge-launch completion bash)"\n'
              'complete -p warpforge-launch >/dev/null || exit 9\n'
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={cword}\n"
              "COMPREPLY=()\n_warpforge_launch_complete\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                          cwd=cwd or env["HOME"],  # never the repository's inventory.yaml
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_commands_come_from_the_parser(shell_env):
    from warpforge_launch.cli import build_parser

    visible = completion.spec_of(build_parser())["visible"]
    assert {"submit", "gpu-info", "completion", "cluster-info", "serve"} <= set(visible)
    assert bash(["warpforge-launch", ""], 1, shell_env) == visible
    assert bash(["warpforge-launch", "c"], 1, shell_env) == ["cancel", "cluster-info",
                                                              "completion"]


def test_options_of_a_command_and_choices(shell_env):
    assert bash(["warpforge-launch", "gpu-info", "--"], 2, shell_env) == [
        "--boxes", "--debug", "--help", "--inventory", "--json", "--timeout", "--wake"]
    assert bash(["warpforge-launch", "submit", "--gpu", ""], 3, shell_env) == [
        "NVIDIA", "AMD", "ANY", "NONE"]
    assert bash(["warpforge-launch", "completion", ""], 2, shell_env) == ["bash", "zsh"]
    # an option already given is not offered again
    assert "--wake" not in bash(["warpforge-launch", "gpu-info", "--wake", "--"], 3, shell_env)


def test_scheduler_and_box_names_from_the_inventory(shell_env, lab_inventory):
    inv = ["--inventory", str(lab_inventory)]
    assert bash(["warpforge-launch", *inv, "cluster-info", "--scheduler", ""], 5,
                shell_env) == ["local", "slurm_a"]
    # bash splits --scheduler=sl into three words; the value is completed
    assert bash(["warpforge-launch", *inv, "submit", "--scheduler", "=", "sl"], 6,
                shell_env) == ["slurm_a"]
    assert bash(["warpforge-launch", *inv, "gpu-info", "--boxes", ""], 5, shell_env) == [
        "nvidia", "mark1nvidia", "gpu-boxes", "amd"]
    assert bash(["warpforge-launch", *inv, "gpu-info", "--boxes", "nvidia,a"], 5,
                shell_env) == ["nvidia,amd"]
    # $WARPFORGE_INVENTORY is found as every command finds it
    env = {**shell_env, "WARPFORGE_INVENTORY": str(lab_inventory)}
    assert bash(["warpforge-launch", "list", "--scheduler", "s"], 3, env) == ["slurm_a"]


def test_names_cache_follows_the_inventory_file(shell_env, lab_inventory, _private_home):
    inv = ["--inventory", str(lab_inventory)]
    words = ["warpforge-launch", *inv, "cluster-info", "--scheduler", ""]
    assert bash(words, 5, shell_env) == ["local", "slurm_a"]
    cache = json.loads((_private_home / "completion-cache.json").read_text())
    assert cache["names"]["schedulers"] == ["local", "slurm_a"]
    text = lab_inventory.read_text().replace("slurm_a", "slurm_bigger")
    lab_inventory.write_text(text)  # new size: the cache key changes
    assert bash(words, 5, shell_env) == ["local", "slurm_bigger"]


def test_recent_job_ids_from_the_store(shell_env, tmp_path):
    inv = local_inventory(tmp_path / "inv.yaml")
    model = model_file(tmp_path)
    ids = []
    for _ in range(2):
        proc = run_cli("submit", "--inventory", str(inv), "--source", str(model), "--class",
                       "SimpleMLP", "--inputs", "[(1, 8)]",
                       env={"WARPFORGE_HOME": shell_env["WARPFORGE_HOME"]})
        assert proc.returncode == 0, proc.stderr
        ids.append(proc.stdout.strip())
    assert sorted(bash(["warpforge-launch", "status", ""], 2, shell_env)) == sorted(ids)
    prefix = ids[1][:len("local-") + 3]
    got = bash(["warpforge-launch", "cancel", prefix], 2, shell_env)
    assert ids[1] in got and all(i.startswith(prefix) for i in got)
    assert bash(["warpforge-launch", "logs", "nope-"], 2, shell_env) == []


def test_paths_are_left_to_the_shell(shell_env, tmp_path):
    (tmp_path / "inventory-lab.yaml").write_text("{}")
    got = bash(["warpforge-launch", "--inventory", "inventory-"], 2, shell_env, cwd=tmp_path)
    assert got == ["inventory-lab.yaml"]


def test_no_store_and_no_inventory_complete_quietly(shell_env, tmp_path):
    assert not (Path(shell_env["WARPFORGE_HOME"]) / "jobs.sqlite3").exists()
    assert bash(["warpforge-launch", "status", ""], 2, shell_env) == []
    assert not (Path(shell_env["WARPFORGE_HOME"]) / "jobs.sqlite3").exists()  # never created
    assert bash(["warpforge-launch", "--inventory", str(tmp_path / "missing.yaml"),
                 "submit", "--scheduler", ""], 5, shell_env) == []
    # the built-in default inventory
    assert bash(["warpforge-launch", "gpu-info", "--boxes", ""], 3, shell_env) == ["local"]


@pytest.mark.parametrize("words", [["gpu-info", "--boxes", ""], ["sweep", "status", ""],
                                   ["sweep", ""]])
def test_callback_never_imports_the_heavy_stack(shell_env, lab_inventory, words):
    run_cli("sweep", "list", env={"WARPFORGE_HOME": shell_env["WARPFORGE_HOME"]})  # a store
    argv = ["warpforge-launch", "--inventory", str(lab_inventory), *words]
    code = ("import sys; from warpforge_launch import cli; "
            f"cli.main(['__complete', 'bash', '{len(argv) - 1}', *{argv!r}]); "
            "heavy = [m for m in ('pydantic', 'rich', 'httpx', 'paramiko', 'fabric', "
            "'warpforge_launch.inventory', 'warpforge_launch.store') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], env=shell_env, capture_output=True,
                         text=True, timeout=60).stdout
    assert "HEAVY []" in out, out


def test_cheap_lookups_match_the_real_ones(monkeypatch, tmp_path):
    """The callback's copies of store.home() and inventory.find() agree with them."""
    from warpforge_launch import inventory, store

    monkeypatch.chdir(tmp_path)
    for env in ({}, {"WARPFORGE_HOME": str(tmp_path / "h")},
                {"XDG_STATE_HOME": str(tmp_path / "x")}):
        monkeypatch.delenv("WARPFORGE_HOME", raising=False)
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert Path(completion._state_dir()) == store.home()
    assert completion.find_inventory() is None and inventory.find(None) is None
    (tmp_path / "inventory.yaml").write_text("{}")
    assert Path(completion.find_inventory()) == inventory.find(None)
    monkeypatch.setenv("WARPFORGE_INVENTORY", str(tmp_path / "other.yaml"))
    assert Path(completion.find_inventory()) == inventory.find(None)


def test_completion_command_prints_the_scripts():
    for shell in ("bash", "zsh"):
        proc = run_cli("completion", shell)
        assert proc.returncode == 0 and proc.stdout == completion.SCRIPTS[shell]
    proc = run_cli("completion", "fish")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (.ci/setup.d/85-zsh.sh)")
def test_zsh_function_offers_the_callbacks_candidates(shell_env, lab_inventory):
    """Real zsh runs the generated function. compadd and _files work only inside a
    completion widget, so here they are shell functions that print what they were given."""
    def zsh(words: list[str]) -> list[str]:
        script = ("compdef() { :; }\n"
                  "compadd() { while [[ $1 != -- ]]; do shift; done; shift; print -l -- \"$@\"; }\n"
                  "_files() { print -- \"@files $*\"; }\n"
                  'eval "$(warpforge-launch completion zsh)"\n'
                  f"words=({' '.join(shlex.quote(w) for w in words)}); CURRENT={len(words)}\n"
                  "_warpforge_launch\n")
        proc = subprocess.run([ZSH, "-f", "-c", script], env=shell_env, cwd=shell_env["HOME"],
                              capture_output=True, text=True, timeout=60)
        return [line for line in proc.stdout.splitlines() if line]

    inv = ["--inventory", str(lab_inventory)]
    assert zsh(["warpforge-launch", "gpu"]) == ["gpu-info"]
    assert zsh(["warpforge-launch", *inv, "submit", "--scheduler=s"]) == ["--scheduler=slurm_a"]
    assert zsh(["warpforge-launch", *inv, "gpu-info", "--boxes", "a"]) == ["amd"]
    assert zsh(["warpforge-launch", "--inventory", ""]) == ["@files "]
    assert zsh(["warpforge-launch", "status", "x"]) == []
    # `sweep <Tab>`: sweep files (and directories) through _files, subcommands through compadd
    assert zsh(["warpforge-launch", "sweep", "st"]) == ["@files -g (*.yaml|*.yml)", "status"]


def test_callback_without_arguments_is_quiet():
    proc = subprocess.run([sys.executable, "-m", "warpforge_launch", "__complete"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr == ""


def test_parser_spec_is_cached_until_a_module_changes(monkeypatch, _private_home):
    """A warm Tab press reads the parser's spec from the cache; a changed module (a helper
    adding a command) makes the next one rebuild it from build_parser()."""
    from warpforge_launch import cli

    built = []
    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        sub.add_parser(f"newcmd{len(built)}", help="added by a test")
        built.append(1)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    key = ["v1"]
    monkeypatch.setattr(completion, "_package_key", lambda: list(key))
    assert completion.complete("bash", 1, ["warpforge-launch", "newcmd"]) == ["newcmd0"]
    assert completion.complete("bash", 1, ["warpforge-launch", "newcmd"]) == ["newcmd0"]
    assert len(built) == 1  # the second press came from the cache
    key[0] = "v2"
    assert completion.complete("bash", 1, ["warpforge-launch", "newcmd"]) == ["newcmd1"]
    assert (_private_home / "completion-parser.json").exists()


def test_package_key_sees_every_module():
    key = completion._package_key()
    files = {entry[0] for entry in key[2:]}
    assert {"cli.py", "completion.py", "lab/gpuinfo.py", "web/cli.py"} <= files


ZPTY = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'stty columns 500; PS1="> "; autoload -Uz compinit && compinit -u -D'
zpty -w z 'eval "$(warpforge-launch completion zsh)"; print WF""READY'
zpty -r z line '*WFREADY*'
zpty -w -n z "$1"$'\t'
acc=""
for i in {1..50}; do
  if zpty -r -t z chunk; then acc+=$chunk; fi
  [[ $acc == *"$2"* ]] && break
  sleep 0.2
done
print -r -- "$acc"
zpty -d z
"""


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (.ci/setup.d/85-zsh.sh)")
@pytest.mark.parametrize("typed, completed", [
    ("warpforge-launch gpu-i", "warpforge-launch gpu-info "),
    ("warpforge-launch --inventory INV cluster-info --scheduler sl",
     "cluster-info --scheduler slurm_a "),
    ("warpforge-launch --inventory INV gpu-info --boxes=mark", "--boxes=mark1nvidia "),
])
def test_zsh_completes_a_line_in_a_real_interactive_shell(shell_env, lab_inventory, typed,
                                                          completed):
    """An interactive zsh on a pseudo-terminal (zsh/zpty) with compinit and the generated
    script: Tab completes the line the user typed."""
    typed = typed.replace("INV", str(lab_inventory))
    proc = subprocess.run([ZSH, "-f", "-c", ZPTY, "wf-zpty", typed, completed], env=shell_env,
                          cwd=shell_env["HOME"], capture_output=True, text=True, timeout=60)
    after = proc.stdout.split("WFREADY", 1)[-1]
    assert completed in after, proc.stdout[-400:]


# ---- sweeps: ids from the store, `sweep FILE` as `sweep submit FILE` -----------------------
def _sweep_file(directory: Path, name: str) -> Path:
    model_file(directory)
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\nmodels: [{{source: simple_mlp.py, class: SimpleMLP}}]\n"
                    "inputs: ['[(1, 8)]']\n")
    return path


def test_recent_sweep_ids_from_the_store(shell_env, tmp_path):
    inv = local_inventory(tmp_path / "inv.yaml")
    ids = []
    for name in ("first", "second"):
        proc = run_cli("sweep", str(_sweep_file(tmp_path, name)), "--inventory", str(inv),
                       env={"WARPFORGE_HOME": shell_env["WARPFORGE_HOME"]})
        assert proc.returncode == 0, proc.stderr
        ids.append(proc.stdout.strip())
    for command in ("status", "result", "cancel", "fetch"):
        assert bash(["warpforge-launch", "sweep", command, ""], 3, shell_env) == ids[::-1]
    got = bash(["warpforge-launch", "sweep", "status", ids[0][:len("sweep-") + 4]], 3,
               shell_env)
    assert got == [ids[0]]
    # a job id is no sweep id, and a sweep id is no job id
    assert not set(bash(["warpforge-launch", "status", ""], 2, shell_env)) & set(ids)


def test_sweep_ids_without_a_store_complete_nothing(shell_env):
    assert bash(["warpforge-launch", "sweep", "status", ""], 3, shell_env) == []
    assert not (Path(shell_env["WARPFORGE_HOME"]) / "jobs.sqlite3").exists()


def test_sweep_file_form_completes_as_sweep_submit(shell_env, tmp_path):
    (tmp_path / "s.yaml").write_text("{}")
    submit_opts = bash(["warpforge-launch", "sweep", "submit", "s.yaml", "--"], 4, shell_env)
    assert {"--dry-run", "--wait", "--snakegrinder"} <= set(submit_opts)
    assert bash(["warpforge-launch", "sweep", "s.yaml", "--"], 3, shell_env) == submit_opts
    assert bash(["warpforge-launch", "sweep", "s.yaml", "--dry-run", "--"], 4,
                shell_env) == [o for o in submit_opts if o != "--dry-run"]
    # an option's value before the file is not taken for the file
    assert bash(["warpforge-launch", "sweep", "--snakegrinder", "sg", "s.yaml", "--w"], 5,
                shell_env) == ["--wait"]
    assert bash(["warpforge-launch", "sweep", "s.yaml", "x"], 3, shell_env) == []


def test_sweep_offers_its_subcommands_and_sweep_files(shell_env, tmp_path):
    work = tmp_path / "work"
    (work / "sweeps").mkdir(parents=True)
    for name in ("mlp.yaml", "stats.yml", "notes.txt", "status.py"):
        (work / name).write_text("{}")
    got = bash(["warpforge-launch", "sweep", ""], 2, shell_env, cwd=work)
    assert sorted(got) == sorted(["submit", "status", "result", "cancel", "fetch", "list",
                                  "mlp.yaml", "stats.yml", "sweeps"])
    assert sorted(bash(["warpforge-launch", "sweep", "s"], 2, shell_env, cwd=work)) == [
        "stats.yml", "status", "submit", "sweeps"]
    # `sweep submit` takes a sweep file too
    assert sorted(bash(["warpforge-launch", "sweep", "submit", ""], 3, shell_env,
                       cwd=work)) == ["mlp.yaml", "stats.yml", "sweeps"]


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed (.ci/setup.d/85-zsh.sh)")
@pytest.mark.parametrize("typed, completed", [
    ("warpforge-launch sweep ml", "sweep mlp.yaml "),   # not mlp.txt: a sweep file
    ("warpforge-launch sweep stat", "sweep status "),
    ("warpforge-launch sweep mlp.yaml --dr", "sweep mlp.yaml --dry-run "),
])
def test_zsh_completes_sweep_files_and_subcommands(shell_env, typed, completed):
    """`sweep <Tab>` in a real interactive zsh: sweep files and subcommands together."""
    home = Path(shell_env["HOME"])
    for name in ("mlp.yaml", "mlp.txt"):
        (home / name).write_text("{}")
    proc = subprocess.run([ZSH, "-f", "-c", ZPTY, "wf-zpty", typed, completed], env=shell_env,
                          cwd=home, capture_output=True, text=True, timeout=60)
    after = proc.stdout.split("WFREADY", 1)[-1]
    assert completed in after, proc.stdout[-400:]
