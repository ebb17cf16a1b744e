"""Recipes, `prunekit run` (resumable), reports and comparisons."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from prunekit.errors import ConfigError
from prunekit.recipes.recipe import builtin_recipes, parse_recipe, read_recipe
from prunekit.recipes.schema import METHODS
from prunekit.report.compare import pareto
from tests.conftest import cli

TINY = {"max_steps": 6, "batch_size": 8, "max_length": 32, "lr": 1.0e-3}
E2E = {
    "description": "tiny end to end",
    "defaults": TINY,
    "stages": [
        {"name": "finetune", "method": "finetune"},
        {"name": "prune", "method": "prune-structured", "heads": 0.5, "ffn": 0.5, "calibration_samples": 16},
        {"name": "distill", "method": "distill", "teacher": "@finetune", "max_steps": 300, "checkpoint_every": 100},
        {"name": "control", "method": "finetune", "role": "control"},
        {"name": "speed", "method": "bench", "batch_size": 2, "seq_len": 16, "repeats": 3},
        {"name": "onnx", "method": "export", "format": "onnx", "seq_len": 16, "repeats": 2},
    ],
}


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, tiny_bert, sentiment_dir) -> Path:
    """finetune -> prune -> distill (+ control, bench, export) on a tiny BERT, run once for the module."""
    work = tmp_path_factory.mktemp("run")
    recipe = write_recipe(work / "e2e.yaml", E2E)
    assert cli(f"run {recipe} --model {tiny_bert} --data {sentiment_dir} --out {work / 'out'}") == 0
    return work / "out"


# ---------------------------------------------------------------- recipes: schema and validation


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_every_builtin_recipe_validates_and_survives_a_round_trip(name):
    recipe = read_recipe(name)
    assert recipe.description and recipe.stages
    again = parse_recipe(yaml.safe_load(recipe.dump()), name)
    assert again.as_dict() == recipe.as_dict()


def test_the_default_recipe_is_the_recommended_workflow_against_a_control():
    recipe = read_recipe("default")
    methods = [stage.method for stage in recipe.stages]
    assert methods[:3] == ["lora", "adaptive", "finetune"]
    assert [stage.method for stage in recipe.stages if stage.role == "control"] == ["finetune"]
    assert recipe.stages[1].options["distill_from"] == recipe.stages[2].options["distill_from"] == "@lora"


# flags a command has that its stage does not take as options: the model chain, the stage folder, resumption,
# and what a command does besides the stage (bench's one-model timing against --vs, --generate)
RUNNER_FLAGS = {"--help", "--model", "--student", "--out", "--overwrite", "--json", "--resume", "--checkpoint-dir"}
COMMAND_ONLY = {"bench": {"--vs", "--generate", "--prompt-len", "--new-tokens"}}


@pytest.mark.parametrize("name", list(METHODS))
def test_help_lists_the_same_options_and_defaults_as_the_recipe_schema(name, capsys):
    """One definition: every recipe key is a flag of the command's --help with the same default, and every
    flag of the command is a recipe key or the runner's."""
    from prunekit.cli import build_parser

    method = METHODS[name]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*method.command, "--help"])
    help_text = capsys.readouterr().out
    parser = _parser(method.command)
    parsed_defaults = {action.option_strings[-1]: action.default for action in parser._actions if action.option_strings}
    for option in method.options.values():
        if option.key == "format" or option.hidden:
            continue  # export's format: the command is `export onnx`; a hidden option is an older spelling
        assert option.flag in help_text, option.flag
        expected = False if option.switch else parsed_defaults[option.flag]
        assert option.default == expected, option.key
    flags = set(parsed_defaults)
    keys = {o.flag for o in method.options.values()}
    fixed = {word for word in method.fixed_argv() if word.startswith("--")}
    assert flags - keys <= RUNNER_FLAGS | fixed | COMMAND_ONLY.get(name, set())


def _parser(command):
    import argparse

    from prunekit.cli import build_parser

    parser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


BAD_RECIPES = [
    ([], "expected a mapping with a 'stages' list"),
    ({"stages": []}, "stages: expected a non-empty list"),
    ({"stagez": []}, "stagez: unknown key (did you mean 'stages'?)"),
    ({"stages": [{"name": "a", "method": "finetuen"}]}, "stages[0].method: expected one of finetune"),
    ({"stages": [{"name": "a", "method": "finetune", "lr": -1}]}, "stages[0].lr: expected a number > 0, got -1"),
    (
        {"stages": [{"name": "p", "method": "prune-magnitude", "sparsity": 1.5}]},
        "stages[0].sparsity: expected a number in [0, 1), got 1.5",
    ),
    (
        {"stages": [{"name": "p", "method": "prune-magnitude", "sparsty": 0.5}]},
        "stages[0].sparsty: not an option of method prune-magnitude (did you mean 'sparsity'?)",
    ),
    (
        {"stages": [{"name": "p", "method": "prune-magnitude", "scope": "everywhere"}]},
        "stages[0].scope: expected one of global, layer, row, uniform, got 'everywhere'",
    ),
    ({"stages": [{"name": "a", "method": "lora", "lora": True}]}, "stages[0].lora: not an option of method lora"),
    ({"stages": [{"name": "a", "method": "finetune", "lora": "yes"}]}, "stages[0].lora: expected true or false"),
    ({"stages": [{"name": "a", "method": "finetune", "epochs": [1, 2]}]}, "stages[0].epochs: expected"),
    ({"stages": [{"name": "A b", "method": "finetune"}]}, "stages[0].name: expected a short lowercase name"),
    ({"stages": [{"name": "a", "method": "finetune"}] * 2}, "stages[1].name: 'a' is taken"),
    ({"stages": [{"name": "d", "method": "distill"}]}, "stages[0]: a distill stage needs teacher"),
    (
        {"stages": [{"name": "a", "method": "finetune", "distill_from": "@b"}, {"name": "b", "method": "finetune"}]},
        "stages[0].distill_from: @b: expected @input or @ an earlier stage",
    ),
    ({"stages": [{"name": "a", "method": "finetune", "from": "nowhere"}]}, "stages[0].from: expected 'input'"),
    ({"stages": [{"name": "e", "method": "evaluate", "role": "control"}]}, "stages[0].role: a evaluate stage"),
    ({"stages": [{"name": "p", "method": "prune-magnitude", "role": "control"}]}, "the equal-budget control is"),
    ({"stages": [{"name": "x", "method": "export", "format": "hf", "opset": 17}]}, "stages[0].opset: only with"),
    ({"defaults": {"sparsity": 2.0}, "stages": [{"name": "a", "method": "finetune"}]}, "defaults.sparsity: expected"),
    ({"defaults": {"nope": 1}, "stages": [{"name": "a", "method": "finetune"}]}, "defaults.nope: not an option"),
]


@pytest.mark.parametrize("raw, message", BAD_RECIPES)
def test_a_bad_recipe_is_one_line_naming_the_file_and_the_path_inside_it(raw, message, tmp_path):
    path = write_recipe(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError) as err:
        read_recipe(str(path))
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_exit_code_2_and_one_line_for_a_bad_recipe(tmp_path, capsys):
    path = write_recipe(
        tmp_path / "bad.yaml", {"stages": [{"name": "p", "method": "prune-magnitude", "sparsity": 1.5}]}
    )
    assert cli(f"run {path} --out {tmp_path / 'out'}") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"prunekit run: error: {path}: stages[0].sparsity: expected a number in [0, 1), got 1.5"
    assert not (tmp_path / "out").exists()


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("stages:\n  - name: a\n    method: [finetune\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line \d"):
        read_recipe(str(path))


def test_set_overrides_a_stage_option_and_a_default():
    recipe = read_recipe("structured", ["stages[1].heads=0.25", "defaults.seed=7", "stages[2].distill_from=@prune"])
    prune, recover = recipe.stages[1], recipe.stages[2]
    assert prune.options["heads"] == 0.25 and recover.options["distill_from"] == "@prune"
    assert all(stage.options.get("seed") == 7 for stage in recipe.stages if "seed" in METHODS[stage.method].options)
    with pytest.raises(ConfigError, match=r"stages\[1\].heads: expected a number in \(0, 1\], got 2"):
        read_recipe("structured", ["stages[1].heads=2"])
    with pytest.raises(ConfigError, match=r"--set stages\[9\].heads=1: default has|has 6 stage"):
        read_recipe("default", ["stages[9].heads=1"])
    with pytest.raises(ConfigError, match="expected stages"):
        read_recipe("default", ["heads=1"])


def test_unknown_recipe_suggests_a_builtin():
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        read_recipe("defualt")


def test_recipes_command_lists_shows_and_documents(capsys):
    assert cli("recipes") == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in builtin_recipes())
    assert cli("recipes --show default") == 0
    assert yaml.safe_load(capsys.readouterr().out)["stages"][0]["method"] == "lora"
    assert cli("recipes --options prune-structured") == 0
    assert "heads" in capsys.readouterr().out
    assert cli("recipes --options prune") == 2


# ---------------------------------------------------------------- running


def stage_summary(out: Path, folder: str) -> dict:
    return json.loads((out / folder / "summary.json").read_text())


def test_a_tiny_recipe_runs_end_to_end_and_chains_its_stages(e2e_run, tiny_bert):
    out = e2e_run
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders == ["01-finetune", "02-prune", "03-distill", "04-control", "05-speed", "06-onnx", "plots"]
    records = {name: json.loads((out / name / "stage.json").read_text()) for name in folders if name != "plots"}
    # the chain: each stage started from the one before; distill's student is the pruned model
    assert records["02-prune"]["input"] == "01-finetune"  # the run's own models: relative to the run folder
    assert records["02-prune"]["model"] == "02-prune"
    assert records["03-distill"]["argv"][records["03-distill"]["argv"].index("--student") + 1] == str(out / "02-prune")
    assert records["03-distill"]["argv"][records["03-distill"]["argv"].index("--teacher") + 1] == str(
        out / "01-finetune"
    )
    pruned, distilled = stage_summary(out, "02-prune"), stage_summary(out, "03-distill")
    assert distilled["params_total"] == pruned["params_total"] < stage_summary(out, "01-finetune")["params_total"]
    # the control: dense, from the input, for the steps of finetune (6) + distill (300)
    control = stage_summary(out, "04-control")
    assert records["04-control"]["input"] == str(tiny_bert) and control["train"]["steps"] == 306
    assert control["params_total"] == stage_summary(out, "01-finetune")["params_total"]
    bench = stage_summary(out, "05-speed")
    assert set(bench["models"]) == {"finetune", "prune", "distill", "control"}
    assert bench["parent"] == "finetune" and bench["control"] == "control"
    assert bench["models"]["finetune"]["ratio_vs_parent"] == 1.0
    export = stage_summary(out, "06-onnx")
    assert (out / "06-onnx" / export["path"]).is_file() and export["max_abs_diff"] <= 1e-4
    for name in ("01-finetune", "03-distill", "06-onnx"):
        assert (out / name / "log.txt").read_text().startswith("$ prunekit ")
    assert yaml.safe_load((out / "recipe.yaml").read_text())["stages"][2]["teacher"] == "@finetune"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files or logs left over


def test_the_report_has_a_row_per_stage_and_embeds_every_plot(e2e_run):
    md = (e2e_run / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    assert [row.split(" | ")[0][2:] for row in rows] == ["finetune", "prune", "distill", "control (control)"]
    assert "8,352" in md or "removed" in md
    page = (e2e_run / "report.html").read_text()
    plots = sorted((e2e_run / "plots").glob("*.png"))
    assert len(plots) == 3 and page.count("src='data:image/png;base64,") == len(plots)
    assert "src='plots/" not in page and "http" not in page  # self-contained


def test_report_command_rewrites_the_report(e2e_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(e2e_run, copy)
    (copy / "report.md").unlink()
    assert cli(f"report {copy}") == 0 and (copy / "report.md").is_file()
    assert cli(f"report {tmp_path}") == 2  # not a run folder


def test_compare_marks_the_pareto_frontier(e2e_run, tmp_path):
    assert pareto([(1.0, 0.9), (2.0, 0.8), (1.5, 0.7), (2.0, 0.85)], lower_x_better=False) == [0, 3]
    assert pareto([(10.0, 0.9), (5.0, 0.9)], lower_x_better=True) == [1]
    other = tmp_path / "other"
    shutil.copytree(e2e_run, other)
    assert cli(f"compare {e2e_run} {other} --out {tmp_path / 'cmp'}") == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [row["stage"] for row in result["runs"]] == ["distill", "distill"]
    assert (tmp_path / "cmp" / "pareto-speedup.png").is_file() and (tmp_path / "cmp" / "compare.html").is_file()


def test_a_finished_run_is_not_overwritten_without_a_flag(e2e_run, tiny_bert, sentiment_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "e2e.yaml", E2E)
    before = (e2e_run / "01-finetune" / "model.safetensors").read_bytes()
    assert cli(f"run {recipe} --model {tiny_bert} --data {sentiment_dir} --out {e2e_run}") == 2
    assert "holds a run already; pass --resume" in capsys.readouterr().err
    assert (e2e_run / "01-finetune" / "model.safetensors").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert cli(f"run {recipe} --model {tiny_bert} --data {sentiment_dir} --out {other} --overwrite") == 2
    assert (other / "keep.txt").read_text() == "mine"


def test_resume_refuses_a_changed_recipe_or_input(e2e_run, tiny_bert, sentiment_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(e2e_run, run)
    changed = write_recipe(tmp_path / "changed.yaml", {**E2E, "defaults": {**TINY, "lr": 2.0e-3}})
    assert cli(f"run {changed} --model {tiny_bert} --data {sentiment_dir} --out {run} --resume") == 2
    assert "stage 01-finetune was run with other settings" in capsys.readouterr().err
    same = write_recipe(tmp_path / "same.yaml", E2E)
    other_data = shutil.copytree(sentiment_dir, tmp_path / "data" / "SST-2")
    assert cli(f"run {same} --model {tiny_bert} --data {other_data} --out {run} --resume") == 2
    assert "different inputs" in capsys.readouterr().err


def test_resume_accepts_the_same_data_spelled_another_way(e2e_run, tiny_bert, sentiment_dir, tmp_path, capsys):
    run = shutil.copytree(e2e_run, tmp_path / "run")
    recipe = write_recipe(tmp_path / "e2e.yaml", E2E)
    spelled = f"{sentiment_dir.parent}/./{sentiment_dir.name}"
    assert cli(f"run {recipe} --model {tiny_bert} --data {spelled} --out {run} --resume") == 0
    assert capsys.readouterr().out.count("finished earlier, kept") == len(E2E["stages"])


def test_a_nan_loss_stops_the_run_and_keeps_the_finished_stages(tiny_bert, sentiment_dir, tmp_path, capsys):
    recipe = {
        "defaults": {**TINY, "max_steps": 4},
        "stages": [
            {"name": "finetune", "method": "finetune"},
            {"name": "diverge", "method": "finetune", "lr": 1.0e30, "weight_decay": 0.0},
            {"name": "after", "method": "finetune"},
        ],
    }
    path = write_recipe(tmp_path / "nan.yaml", recipe)
    assert cli(f"run {path} --model {tiny_bert} --data {sentiment_dir} --out {tmp_path / 'out'}") == 2
    err = capsys.readouterr().err
    assert "stage 02-diverge stopped: the training loss became" in err and "--resume" in err
    assert (tmp_path / "out" / "01-finetune" / "stage.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "01-finetune",
        "recipe.yaml",
        "run.json",
    ]


@pytest.mark.slow
def test_resume_after_a_sigkill_mid_stage_ends_like_an_uninterrupted_run(e2e_run, tiny_bert, sentiment_dir, tmp_path):
    """A real SIGKILL of `prunekit run` while stage 3 trains, after its first checkpoint; --resume keeps
    stages 1-2, continues stage 3 from its checkpoint, and ends with the same metrics in every stage as
    the uninterrupted run."""
    recipe = write_recipe(tmp_path / "e2e.yaml", E2E)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "prunekit", "run", str(recipe), "--model", str(tiny_bert), "--data",
               str(sentiment_dir), "--out", str(out)]  # fmt: skip
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / ".03-distill.checkpoints" / "checkpoint-100"
    deadline = time.time() + 240
    while not (checkpoint / "trainer_state.json").is_file() and runner.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(runner.pid, signal.SIGKILL)
    assert runner.wait() == -signal.SIGKILL, "the run ended before stage 3's first checkpoint"
    time.sleep(1.0)  # the stage's child follows its parent (PR_SET_PDEATHSIG)
    assert not (out / "03-distill" / "stage.json").exists() and (out / "02-prune" / "stage.json").is_file()
    kept = (out / "01-finetune" / "model.safetensors").stat().st_mtime_ns
    assert cli(f"run {recipe} --model {tiny_bert} --data {sentiment_dir} --out {out} --resume") == 0
    assert (out / "01-finetune" / "model.safetensors").stat().st_mtime_ns == kept  # not trained again
    assert "continuing from" in (out / "03-distill" / "log.txt").read_text()
    from safetensors.torch import load_file

    for folder in ("01-finetune", "02-prune", "03-distill", "04-control"):
        assert stage_summary(out, folder)["metrics"] == stage_summary(e2e_run, folder)["metrics"], folder
        resumed, straight = (
            load_file(out / folder / "model.safetensors"),
            load_file(e2e_run / folder / "model.safetensors"),
        )
        assert resumed.keys() == straight.keys()
        for name, tensor in straight.items():  # the same weights: the checkpoint restored data order and RNG too
            assert torch.allclose(resumed[name], tensor, atol=1e-6), (folder, name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_the_html_report_opens_in_headless_chromium_with_every_image_loaded(e2e_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    probe = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-loaded', ok + '/' + imgs.length); });</script></body>"
    )
    page.write_text((e2e_run / "report.html").read_text().replace("</body>", probe))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-loaded="3/3"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    low, high = pixels.getextrema()
    assert high - low > 100  # not a blank page: table text and plots


def test_lora_merge_evaluate_and_hf_export_stages_chain(tiny_bert, sentiment_dir, tmp_path):
    recipe = {
        "defaults": {**TINY, "max_steps": 3},
        "stages": [
            {"name": "lora", "method": "lora", "lr": 1.0e-2},
            {"name": "merge", "method": "merge"},
            {"name": "check", "method": "evaluate"},
            {"name": "hf", "method": "export", "format": "hf"},
        ],
    }
    out = tmp_path / "out"
    path = write_recipe(tmp_path / "chain.yaml", recipe)
    assert cli(f"run {path} --model {tiny_bert} --data {sentiment_dir} --out {out}") == 0
    merge = json.loads((out / "02-merge" / "stage.json").read_text())["argv"]
    # the adapter of the LoRA stage, merged into the model that stage started from
    assert merge[merge.index("--adapter") + 1] == str(out / "01-lora" / "adapter")
    assert merge[merge.index("--model") + 1] == str(tiny_bert)
    merged, lora = stage_summary(out, "02-merge"), stage_summary(out, "01-lora")
    assert merged["metrics"] == pytest.approx(lora["metrics"])
    check = json.loads((out / "03-check" / "stage.json").read_text())
    assert check["input"] == "02-merge" and stage_summary(out, "03-check")["metrics"] == pytest.approx(lora["metrics"])
    exported = out / "04-hf" / "model"
    assert (exported / "config.json").is_file() and not (exported / "stage.json").exists()
    assert cli(f"evaluate --model {exported} --data {sentiment_dir} --max-length 32 --json {tmp_path / 'e.json'}") == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"] == pytest.approx(lora["metrics"])


def test_a_killed_lottery_stage_is_continued_with_its_own_resume(tmp_path):
    from prunekit.recipes.recipe import INPUT
    from prunekit.recipes.runner import RunState, stage_argv

    recipe = parse_recipe({"stages": [{"name": "ticket", "method": "lottery", "rounds": 2}]}, "r.yaml")
    state = RunState(tmp_path, "minilm", "data", models={INPUT: "minilm"})
    folder = tmp_path / "01-ticket"
    assert "--resume" not in stage_argv(recipe.stages[0], folder, state)
    assert stage_argv(recipe.stages[0], folder, state, resume_partial=True)[-1] == "--resume"


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--checkpoint-every 2", "--checkpoint-every: also pass --checkpoint-dir"),
        ("--checkpoint-every 2 --checkpoint-dir {w}/ck --prune magnitude", "pruning schedule's state is not in"),
    ],
)
def test_checkpoint_flags_are_checked(flags, message, tiny_bert, sentiment_dir, tmp_path, capsys):
    command = f"finetune --model {tiny_bert} --data {sentiment_dir} --out {tmp_path / 'o'} " + flags.format(w=tmp_path)
    assert cli(command) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_run_budget_flags_reach_every_training_stage_and_the_run_ends_with_its_table(
    tiny_bert, sentiment_dir, tmp_path, capsys
):
    """`prunekit run ... --max-steps N --max-train-samples M --max-length L` (the README's first command's
    budget) are recipe defaults: each training stage trains N steps on M examples, the control as many
    steps as the chain; each stage is announced with its place and time, and the stage table ends it."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "stages:\n  - {name: ft, method: finetune, batch_size: 8}\n"
        "  - {name: control, method: finetune, role: control, batch_size: 8}\n"
    )
    out = tmp_path / "out"
    budget = "--max-steps 2 --max-train-samples 24 --max-length 16"
    assert cli(f"run {recipe} --model {tiny_bert} --data {sentiment_dir} --out {out} {budget}") == 0
    printed = capsys.readouterr().out
    trained = json.loads((out / "01-ft" / "summary.json").read_text())["train"]
    assert (trained["steps"], trained["samples"], trained["max_length"]) == (2, 24, 16)
    assert json.loads((out / "02-control" / "summary.json").read_text())["train"]["steps"] == 2
    assert "== stage 1/2 01-ft (finetune)" in printed and "== stage 2/2 02-control done in " in printed
    assert "| stage | method | metric |" in printed.split("run finished:")[1]
