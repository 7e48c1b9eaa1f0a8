"""Presets: shipped files, extends/sweep/--set semantics, round trips and the error messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from fa_contract.config import Config
from fa_tui.presets import (PresetError, describe, load_plan, load_preset, resolve_preset,
                            save_preset, shipped_presets)

EXPECTED_RUNS = {
    "quickstart": 2, "rank_collapse": 2, "resnet18_ablation": 4, "ldfa_rank_sweep": 14,
    "dfa_best_practices": 8, "dfa_bottleneck": 7, "lillicrap_linear": 2, "conservation": 3,
    "fashion_mnist_fa_vs_bp": 6,
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error(preset, sets=(), check_data=False) -> str:
    with pytest.raises(PresetError) as info:
        load_plan(preset, sets, check_data=check_data)
    return str(info.value)


# --- shipped presets --------------------------------------------------------------------------
def test_every_shipped_preset_loads_and_expands():
    shipped = shipped_presets()
    assert set(shipped) == set(EXPECTED_RUNS)
    for name, path in shipped.items():
        plan = load_plan(path, check_data=False)
        assert len(plan.runs) == EXPECTED_RUNS[name], name
        names = [r.name for r in plan.runs]
        assert len(set(names)) == len(names), name
        assert all(n.startswith(name) and r.config.run.name == n for n, r in zip(names, plan.runs))
        assert describe(path), f"{name} needs a '# one-line description' first line"


def test_shipped_presets_are_faithful_where_the_paper_is_known():
    dfa = load_preset("dfa_best_practices", check_data=False)
    for cfg in dfa:
        assert (cfg.rule.name, cfg.data.name, cfg.model.width, cfg.model.depth) == (
            "dfa", "cifar10", 800, 3)
        assert (cfg.optim.name, cfg.optim.lr, cfg.train.batch_size, cfg.train.epochs) == (
            "sgd", 5e-4, 128, 50)
    bottleneck = load_plan("dfa_bottleneck", check_data=False)
    assert bottleneck.axes == {"model.bottleneck": [1, 2, 5, 10, 50, 100, 800]}
    assert all(c.train.epochs == 50 and c.rule.name == "dfa" for c in bottleneck.configs)
    lin = load_preset("lillicrap_linear", check_data=False)
    assert [c.rule.name for c in lin] == ["bp", "fa"]
    assert all((c.data.shape, c.data.teacher, c.model.width, c.model.depth, c.model.activation)
               == ([30], "linear", 20, 1, "linear") for c in lin)
    ablation = load_plan("resnet18_ablation", check_data=False)
    assert [(c.norm.name, c.optim.name) for c in ablation.configs] == [
        ("none", "sgd"), ("none", "muon"), ("batchnorm", "sgd"), ("batchnorm", "muon")]
    assert {c.rule.name for c in ablation.configs} == {"fa"}
    ldfa = load_plan("ldfa_rank_sweep", check_data=False)
    assert ldfa.axes == {"rule.rank": [1, 2, 4, 8, 10, 16, 32], "rule.adapt": ["fixed", "oja"]}
    cons = load_preset("conservation", check_data=False)[0]
    assert (cons.rule.name, cons.optim.momentum, cons.optim.weight_decay, cons.norm.name,
            cons.model.activation, cons.model.bias) == ("fa", 0.0, 0.0, "none", "relu", False)


def test_resolve_by_name_and_by_path(tmp_path):
    assert resolve_preset("quickstart") == shipped_presets()["quickstart"]
    assert resolve_preset("quickstart.toml") == shipped_presets()["quickstart"]
    own = write(tmp_path / "own.toml", "[rule]\nname = 'fa'\n")
    assert resolve_preset(own) == own
    msg = error(tmp_path / "nope.toml")
    assert "nope.toml" in msg and "quickstart" in msg


# --- sweep ------------------------------------------------------------------------------------
def test_sweep_order_names_and_seeds(tmp_path):
    p = write(tmp_path / "grid.toml", """
[sweep]
seeds = [0, 1]
rule.name = ["bp", "fa"]           # bare dotted key: TOML nests it, the loader flattens it
"optim.lr" = [0.1, 0.05]
""")
    plan = load_plan(p)
    assert list(plan.axes) == ["rule.name", "optim.lr", "run.seed"]
    assert [r.name for r in plan.runs[:4]] == [
        "grid-rule=bp-lr=0.1-seed=0", "grid-rule=bp-lr=0.05-seed=0",
        "grid-rule=fa-lr=0.1-seed=0", "grid-rule=fa-lr=0.05-seed=0"]
    assert [r.config.run.seed for r in plan.runs] == [0] * 4 + [1] * 4
    assert plan.runs[5].point == {"rule.name": "bp", "optim.lr": 0.05, "run.seed": 1}
    assert plan.runs[5].config.optim.lr == 0.05 and plan.runs[5].config.rule.name == "bp"


def test_run_name_comes_from_run_name_else_file_stem(tmp_path):
    p = write(tmp_path / "one.toml", "[run]\nname = 'mine'\n")
    assert [r.name for r in load_plan(p).runs] == ["mine"]
    assert load_preset(write(tmp_path / "two.toml", "[rule]\nname = 'fa'\n"))[0].run.name == "two"


# --- extends ----------------------------------------------------------------------------------
def test_extends_child_wins_and_pins_parent_axes(tmp_path):
    write(tmp_path / "base" / "parent.toml", """
[model]
width = 32
depth = 3
[optim]
lr = 0.2
[sweep]
"rule.name" = ["bp", "fa"]
"norm.name" = ["none", "batchnorm"]
""")
    child = write(tmp_path / "child.toml", """
extends = "base/parent.toml"
[model]
width = 16
[norm]
name = "layernorm"
[sweep]
"optim.lr" = [0.1, 0.01]
""")
    plan = load_plan(child)
    assert plan.axes == {"rule.name": ["bp", "fa"], "optim.lr": [0.1, 0.01]}
    for cfg in plan.configs:
        assert (cfg.model.width, cfg.model.depth, cfg.norm.name) == (16, 3, "layernorm")
    assert [c.optim.lr for c in plan.configs] == [0.1, 0.01, 0.1, 0.01]


def test_extends_a_shipped_preset_by_name(tmp_path):
    p = write(tmp_path / "more.toml", 'extends = "quickstart"\n[train]\nepochs = 1\n')
    configs = load_preset(p)
    assert [c.rule.name for c in configs] == ["bp", "fa"]
    assert {c.data.shape[0] for c in configs} == {32} and {c.train.epochs for c in configs} == {1}


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    msg = error(tmp_path / "a.toml")
    assert "cycle a.toml -> b.toml -> a.toml" in msg and "extends" in msg
    p = write(tmp_path / "orphan.toml", 'extends = "gone.toml"\n')
    msg = error(p)
    assert "orphan.toml" in msg and "extends" in msg and "gone.toml" in msg and "quickstart" in msg


# --- --set ------------------------------------------------------------------------------------
def test_set_values_are_typed_from_the_schema(tmp_path):
    p = write(tmp_path / "s.toml", "[model]\nbottleneck = 8\n")
    cfg = load_preset(p, ["optim.lr=0.5", "train.epochs=3", "data.augment=false",
                          "rule.name=fa", "data.subset=[0, 3]", "model.bottleneck=null",
                          "run.name=123", "rule.seed=7", "optim.betas=[0.8, 0.9]"])[0]
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 3 and cfg.data.augment is False
    assert cfg.rule.name == "fa" and cfg.data.subset == [0, 3] and cfg.model.bottleneck is None
    assert cfg.run.name == "123" and cfg.rule.seed == 7 and cfg.optim.betas == (0.8, 0.9)
    assert isinstance(cfg.train.epochs, int)


def test_set_pins_a_swept_key():
    plan = load_plan("fashion_mnist_fa_vs_bp", ["rule.name=fa", "run.seed=3"], check_data=False)
    assert plan.axes == {}
    assert [(r.name, r.config.rule.name, r.config.run.seed) for r in plan.runs] == [
        ("fashion_mnist_fa_vs_bp", "fa", 3)]
    plan = load_plan("fashion_mnist_fa_vs_bp", ["run.seed=3"], check_data=False)
    assert [r.name for r in plan.runs] == ["fashion_mnist_fa_vs_bp-rule=bp",
                                          "fashion_mnist_fa_vs_bp-rule=fa"]


# --- save -------------------------------------------------------------------------------------
def test_save_then_load_round_trips(tmp_path):
    cfg = Config.model_validate({
        "run": {"name": "saved", "seed": 4}, "model": {"width": 33, "bottleneck": 5},
        "rule": {"name": "ldfa", "rank": 3}, "optim": {"betas": [0.8, 0.95], "clip": 1.5},
        "data": {"subset": [1, 2], "shape": [3, 8, 8]}})
    path = tmp_path / "saved.toml"
    save_preset(cfg, path, description="a composition")
    assert describe(path) == "a composition"
    assert load_preset(path) == [cfg]
    assert [p.name for p in tmp_path.iterdir()] == ["saved.toml"]   # no temporary left behind


def test_save_a_preset_dict_with_sweep(tmp_path):
    path = tmp_path / "comp.toml"
    save_preset({"model": {"width": 12, "bottleneck": None},
                 "sweep": {"rule.name": ["bp", "usf"]}}, path)
    configs = load_preset(path)
    assert [(c.rule.name, c.model.width, c.model.bottleneck) for c in configs] == [
        ("bp", 12, None), ("usf", 12, None)]


# --- errors -----------------------------------------------------------------------------------
def test_unknown_key_suggests_the_nearest_name(tmp_path):
    p = write(tmp_path / "typo.toml", "[optim]\nlrr = 0.1\n")
    msg = error(p)
    assert str(p) in msg and "optim.lrr" in msg and "Did you mean 'optim.lr'?" in msg
    p = write(tmp_path / "section.toml", "[optimizer]\nlr = 0.1\n")
    msg = error(p)
    assert "section.toml" in msg and "'optimizer'" in msg and "Did you mean 'optim'?" in msg
    p = write(tmp_path / "wrong_section.toml", "[model]\nrank = 4\n")
    assert "Did you mean 'rule.rank'?" in error(p)


def test_wrong_type_says_what_to_write(tmp_path):
    p = write(tmp_path / "type.toml", '[optim]\nlr = "fast"\n')
    msg = error(p)
    assert "type.toml" in msg and 'optim.lr = "fast"' in msg and "expected a number" in msg
    assert "lr = 0.01" in msg
    p = write(tmp_path / "table.toml", 'rule = "fa"\n')
    msg = error(p)
    assert "table.toml" in msg and "expected a table" in msg and "[rule]" in msg


def test_out_of_range_value(tmp_path):
    p = write(tmp_path / "range.toml", "[train]\nepochs = 0\n")
    msg = error(p)
    assert "range.toml" in msg and "train.epochs = 0" in msg and ">= 1" in msg


def test_unknown_choice_lists_the_choices(tmp_path):
    p = write(tmp_path / "choice.toml", '[rule]\nname = "dfaa"\n')
    msg = error(p)
    assert "choice.toml" in msg and "rule.name" in msg
    assert "'bp', 'fa', 'usf', 'brsf', 'frsf', 'dfa', 'ldfa'" in msg
    assert "Did you mean 'dfa'?" in msg


def test_bad_sweep_value_names_the_sweep(tmp_path):
    p = write(tmp_path / "sw.toml", '[sweep]\n"optim.name" = ["sgd", "rmsprop"]\n')
    msg = error(p)
    assert 'sw.toml: sweep "optim.name"' in msg and "'muon'" in msg


def test_error_in_a_parent_names_the_parent(tmp_path):
    write(tmp_path / "parent.toml", "[model]\nwidth = -4\n")
    child = write(tmp_path / "child.toml", 'extends = "parent.toml"\n[rule]\nname = "fa"\n')
    msg = error(child)
    assert msg.startswith(str(tmp_path / "parent.toml")) and "model.width = -4" in msg


def test_bad_toml_gives_line_and_column(tmp_path):
    p = write(tmp_path / "broken.toml", "[rule]\nname = fa\n")
    msg = error(p)
    assert "broken.toml" in msg and "line 2, column 8" in msg and 'name = "fa"' in msg


def test_sweep_errors(tmp_path):
    p = write(tmp_path / "empty.toml", '[sweep]\n"rule.name" = []\n')
    msg = error(p)
    assert "empty.toml" in msg and "rule.name" in msg
    assert "empty sweep list" in msg and "remove" in msg
    p = write(tmp_path / "unknown.toml", '[sweep]\n"rule.nmae" = ["fa"]\n')
    msg = error(p)
    assert "unknown.toml" in msg and "unknown sweep key" in msg
    assert "Did you mean 'rule.name'?" in msg
    p = write(tmp_path / "scalar.toml", '[sweep]\n"rule.name" = "fa"\n')
    assert "expected a list of values" in error(p)
    p = write(tmp_path / "both.toml", '[rule]\nname = "fa"\n[sweep]\n"rule.name" = ["bp"]\n')
    msg = error(p)
    assert "both.toml" in msg and "rule.name" in msg and "keep only one" in msg
    p = write(tmp_path / "dup.toml", "[sweep]\nseeds = [1, 2, 1]\n")
    assert "lists 1 twice" in error(p)


def test_set_errors(tmp_path):
    p = write(tmp_path / "ok.toml", "[rule]\nname = 'fa'\n")
    msg = error(p, ["optim.lr"])
    assert "ok.toml" in msg and "bad --set syntax" in msg and "key=value" in msg
    msg = error(p, ["optim.lr=fast"])
    assert "--set optim.lr=fast" in msg and "expected a number" in msg
    msg = error(p, ["train.epochs=null"])
    assert "train.epochs cannot be unset" in msg
    msg = error(p, ["optim.learning_rat=1"])
    assert "unknown key 'optim.learning_rat'" in msg
    assert "run.seed" in error(p, ["seeds=[1,2]"])


def test_missing_dataset_files_is_a_preset_error(tmp_path):
    p = write(tmp_path / "nodata.toml",
              f'[data]\nname = "cifar10"\nroot = "{tmp_path / "empty"}"\ndownload = false\n')
    msg = error(p, check_data=True)
    assert "nodata.toml" in msg and "data.name" in msg and "cifar10" in msg and "download" in msg
    assert load_preset(p, ["data.download=true"], check_data=True)[0].data.name == "cifar10"
