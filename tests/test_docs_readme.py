"""The README against the command line it documents: every option it names exists (on the command it is
shown with), and the defaults it quotes are the commands' own. Cheap: reads click's parameters, runs nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typing import Any

import pytest
import torch
import typer
from conftest import ROOT, make_synthetic_dataset, run_cli

from safetensors.torch import save_file

from normalcy.api import ExtractorOptions
from normalcy.cli import app
from normalcy.errors import InputError

README = (ROOT / "README.md").read_text()
# Code the README shows that is not normalcy's: its options are those tools' own.
OTHER_TOOLS = ("pip ", "ray ", "python bench/", "python\nbench/", "tail ", "ln ")


def commands() -> dict[str, Any]:
    """The click commands typer builds (typer's own click, hence no click types here), "" the group."""
    group: Any = typer.main.get_command(app)
    return {"": group, **group.commands}


def options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def snippets() -> list[str]:
    """The README's code: each line of a fenced block and each inline `span` (which may wrap a line)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    return lines + re.findall(r"`([^`]+)`", prose)


def normalcy_snippets() -> list[tuple[list[str], str]]:
    """(the commands named, the rest) for each snippet that runs ``normalcy CMD`` (``predict/serve`` is two)."""
    found = []
    for s in snippets():
        for m in re.finditer(r"\bnormalcy ([a-z][a-z/-]*)(.*?)(?=\bnormalcy |\||$)", s, flags=re.S):
            found.append((m.group(1).split("/"), m.group(2)))
    return found


def test_every_option_the_readme_names_exists() -> None:
    known = set().union(*map(options, commands().values())) | {"--help"}
    parts = [p for s in snippets() for p in re.split(r"\||&&", s)]  # `tail -f x | normalcy watch ...`
    named = {o for p in parts if not p.lstrip().startswith(OTHER_TOOLS)
             for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", p)}
    assert named, "no option found in README.md: the parsing broke"
    assert sorted(named - known) == [], "README.md names options no command has"


def test_every_option_is_in_the_readme() -> None:
    """The other way round: no option of a command goes undocumented (a flag's negation, `--no-x` beside
    `--x`, and `--output`, shown as `-o`, count as named)."""
    missing = []
    for name, cmd in commands().items():
        for p in cmd.params:
            if (p.opts and p.opts[0] == "--output") or not any(o.startswith("--") for o in p.opts):
                continue
            if not any(re.search(rf"{o}(?![\w-])", README) for o in (*p.opts, *p.secondary_opts)):
                missing.append(f"normalcy {name} {p.opts[0]}")
    assert missing == []


def test_options_shown_with_a_command_belong_to_it() -> None:
    cmds = commands()
    wrong = []
    for names, rest in normalcy_snippets():
        for name in names:
            if name not in cmds:
                wrong.append(f"normalcy {name}: no such command")
                continue
            for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                if opt not in options(cmds[name]) | {"--help"}:
                    wrong.append(f"normalcy {name} {opt}")
    assert len(normalcy_snippets()) > 20, "the README's normalcy commands were not found: the parsing broke"
    assert wrong == []


def default(command: str, option: str) -> object:
    (param,) = [p for p in commands()[command].params if option in p.opts]
    return param.default


@pytest.mark.parametrize("command, option, value, phrase", [
    ("fit", "--fpr", 0.01, "`--fpr`, default 0.01"),
    ("fit", "--overlap", 64, "overlap 64 by default"),
    ("fit", "--pool-grid", 4, "`--pool-grid 4` by default"),
    ("fit", "--image-size", "auto", "`auto` (the default)"),
    ("fit", "--precision", "auto", "`--precision auto` (the default)"),
    ("score-batch", "--top", 24, "how\n  many images (24)"),
    ("score-batch", "--image-score", "max-median", "--image-score max --rscin-k 1"),
    ("score-batch", "--rscin-k", 8, "--image-score max --rscin-k 1"),
    ("serve", "--strategy", "neighbour", "`neighbour` (default)"),
    ("serve", "--host", "127.0.0.1", "The server listens on 127.0.0.1"),
    ("serve", "--port", 8765, "http://127.0.0.1:8765/"),
    ("demo", "--n-train", 300, "normalcy demo --n-train 300 --n-test 200"),
    ("demo", "--n-test", 200, "normalcy demo --n-train 300 --n-test 200"),
    ("demo", "--output", "normalcy-demo", "write normalcy-demo/report.html"),
])
def test_quoted_defaults_are_the_commands_own(command: str, option: str, value: object, phrase: str) -> None:
    assert phrase in README
    assert str(default(command, option)) == str(value)


def test_documented_defaults_in_help_text_match_the_readme() -> None:
    """Defaults the help states in words (the option's own default is None): the README says the same."""
    helps = {p.opts[0]: p.help or "" for p in commands()["fit"].params}
    assert "(default 3)" in helps["--tune-budget"] and "`--tune-budget` plain fits (default 3" in README
    assert "default 0.13" in helps["--prune"] and "a step of 13 %" in README
    assert "100," in helps["--event-gap"] and "fewer than 100 rows (`--event-gap`)" in README
    top = next(p.help for p in commands()["predict"].params if "--top" in p.opts)
    assert "(default 24)" in top and "(default 12)" in top and "images (24) or series (12)" in README


def write_config(tmp_path: Path, cfg: object) -> Path:
    """The README's recipe: a factory file, its weights, and custom_backbone()'s arguments as JSON."""
    (tmp_path / "my_net.py").write_text("from torch import nn\n"
                                        "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, 8, 1))\n")
    save_file({"0.weight": torch.zeros(4, 3, 3, 3), "0.bias": torch.zeros(4)}, str(tmp_path / "w.safetensors"))
    path = tmp_path / "my_backbone.json"
    path.write_text(json.dumps(cfg))
    return path


GOOD = {"module": "my_net.py:build", "weights": "w.safetensors", "levels": {"s8": "0"}, "strides": {"s8": 8}}


@pytest.mark.parametrize("cfg, said", [
    ({**{k: v for k, v in GOOD.items() if k != "module"}, "factory": "my_net.py:build"},
     "unknown key(s) ['factory']; missing key(s) ['module']"),
    ([GOOD], "expected a JSON object"),
    ({**GOOD, "levels": ["0"]}, "wrong type"),
    ({**GOOD, "mean": 0.5}, "wrong type"),
])
def test_backbone_config_mistakes_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                cfg: object, said: str) -> None:
    """The README: "put the same arguments in a JSON file": a key misspelt or a value of the wrong type was a
    TypeError traceback; it is one InputError line naming the file."""
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, cfg)
    with pytest.raises(InputError, match=re.escape(said)) as err:
        ExtractorOptions(backbone_config=path, image_size="64").extractor()
    assert str(path) in str(err.value)


def test_backbone_config_mistake_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = make_synthetic_dataset(tmp_path / "data", n_train=5, n_good=1, n_defect=1)
    path = write_config(tmp_path, {"factory": "my_net.py:build"})
    r = run_cli("fit", data / "train" / "good", "-o", tmp_path / "m", "--backbone-config", path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "my_backbone.json: unknown key(s) ['factory']" in r.stderr


def test_backbone_config_as_documented_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = ExtractorOptions(backbone_config=write_config(tmp_path, GOOD), image_size="64").extractor().spec
    assert spec.name.startswith("custom:") and spec.levels == {"s8": "0"}


def test_backbone_config_keys_the_readme_shows_are_custom_backbones() -> None:
    import inspect

    from normalcy.images.backbones import custom_backbone

    (shown,) = re.findall(r"`(\{\"module\".*?\})`", README, flags=re.S)
    assert set(re.findall(r'"(\w+)":', shown)) <= set(inspect.signature(custom_backbone).parameters)


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_unknown_detector_lists_auto(tmp_path: Path, command: str) -> None:
    """`--detector`'s help (and the README) offer auto for fit, eval and demo; the error for a mistyped name
    listed every detector but auto."""
    data = make_synthetic_dataset(tmp_path / "data", n_train=5, n_good=1, n_defect=1)
    args = ("fit", data / "train" / "good") if command == "fit" else ("demo",)
    r = run_cli(*args, "-o", tmp_path / "out", "--detector", "atuo")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "unknown detector 'atuo'" in r.stderr and "or auto" in r.stderr
