"""Each setting declared once: the command line and config files are derived from the config dataclasses.

Every field of every config is a flag whose help is the field's documentation; text from a flag or a
YAML file is read as the field's declared type; a recipe is chosen by name and its pieces overridden;
any bad input is one line and exit code 2; `minigrpo sft` never writes into the installed package.
"""
import dataclasses
import json
import re

import pytest

from minigrpo.bandit.config import BanditConfig
from minigrpo.cli import COMMANDS, config_class, main, parse, train_config
from minigrpo.core.kl import K1, KLInReward
from minigrpo.core.loss import Surrogate
from minigrpo.core.recipe import PIECES, PRESETS, compose, pieces, preset
from minigrpo.core.validate import read_as, read_settings
from minigrpo.runs.config import TrainConfig

CONFIGURED = [name for name, command in COMMANDS.items() if command.config is not None]


def help_text(command: str, capsys, monkeypatch) -> str:
    """``minigrpo <command> --help`` on one long line: the box drawn around it and the wrapping removed."""
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code in (0, None)
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())


def field_doc(cls, name: str) -> str:
    """A field's documentation, as tyro reads it from the source (a trailing comment, comment lines
    above the field, or a docstring below it)."""
    from tyro import _docstrings

    return _docstrings.get_field_docstring(cls, name, ())


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --- every field is a flag, documented where it is declared --------------------------------------

def test_train_help_lists_every_train_config_field(capsys, monkeypatch):
    text = help_text("train", capsys, monkeypatch)
    missing = [f.name for f in dataclasses.fields(TrainConfig) if flag(f.name) not in text]
    assert missing == []
    for name in ("kl_horizon", "warmup_steps", "updates", "clip_eps", "max_grad_norm", "sample_every",
                 "keep_checkpoints", "recipe", "clip_eps_high", "aggregation"):    # no flag before
        assert flag(name) in text


@pytest.mark.parametrize("command", CONFIGURED)
def test_every_field_is_a_flag_whose_help_is_its_documentation(command, capsys, monkeypatch):
    cls = config_class(command)
    text = help_text(command, capsys, monkeypatch)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name == "shape":         # a group: --shape.n-layer, …
            assert f"--{f.name}." in text, f.name
            continue
        doc = field_doc(cls, f.name)
        assert doc, f"{cls.__name__}.{f.name} has no documentation"
        entry = text[re.search(re.escape(flag(f.name)) + r"(?: [A-Z{]|, --)", text).start():]   # its entry
        assert " ".join((doc or "").split()) in entry[:600], (f.name, doc)


def test_help_shows_the_choices_and_the_defaults(capsys, monkeypatch):
    text = help_text("train", capsys, monkeypatch)
    assert "--recipe {seed,deepseek,dr_grpo,rloo,dapo_like,ppo}|None" in text and "--method {grpo,ppo,dpo,ipo,offline_grpo}" in text
    assert "--prompts INT, --prompts-per-step INT" in text and "(default: 16)" in text
    assert "--reward NAME=FLOAT,…|None, --reward-weights NAME=FLOAT,…|None" in text and "(default: None)" in text
    assert "--reward-fn FILE.py:NAME[=WEIGHT], --reward-fns FILE.py:NAME[=WEIGHT]" in text
    assert "--lr FLOAT|None AdamW learning rate (after a short warm-up); None: 2e-4, or 5e-5 for ppo" in text


@pytest.mark.parametrize("command", CONFIGURED)
def test_every_field_is_reachable_as_a_flag_and_read_as_its_type(command):
    """Each field given its default as text on the command line reads back as that default."""
    cls = config_class(command)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            sub = dataclasses.fields(default)[0]
            flags, settings = parse(command, [f"--{f.name}.{sub.name.replace('_', '-')}", "3"])
            assert settings == {f.name: {sub.name: 3}}
            continue
        if isinstance(default, bool):
            argv = [flag(f.name)]
            default = True
        elif isinstance(default, dict):
            argv = [flag(f.name), ",".join(f"{k}={v}" for k, v in default.items())]
        elif isinstance(default, (list, tuple)):
            argv = [flag(f.name), *[str(x) for x in default]]                # space-separated values
            default = list(default)
        else:
            argv = [flag(f.name), str(default)]
        flags, settings = parse(command, argv)
        assert settings == {f.name: default}, (f.name, argv, settings)


def test_the_convenience_flags():
    assert parse("train", ["--prompts", "3", "--reward", "correct=1,format=0.2", "--forbidden", "a,b"])[1] == \
        {"prompts_per_step": 3, "reward_weights": {"correct": 1.0, "format": 0.2}, "forbidden": ["a", "b"]}
    flags, settings = parse("train", ["--digits", "3", "--json", "--config", "c.yaml"])
    assert (flags["digits"], flags["json"], flags["config"], settings) == (3, True, "c.yaml", {})
    assert parse("bandit", ["--means", "0.1,0.5", "--anchor", "0.4,0.6"])[1] == \
        {"means": [0.1, 0.5], "anchor": [0.4, 0.6]}
    assert parse("bandit", ["--arms", "4"])[0]["arms"] == 4
    assert parse("sft", ["--task-args", "digits=3", "--careless", "none"])[1] == \
        {"task_args": {"digits": 3}, "careless": None}


# --- text read as the declared type (flags and config files alike) --------------------------------

@pytest.mark.parametrize("tp,text,value", [
    (float, "1e-3", 1e-3), (int, "12", 12), (float | None, "none", None), (float | None, "0.5", 0.5),
    (str | None, "null", None), (bool, "true", True), (list[str], "a,b", ["a", "b"]), (list[str], "", []),
    (dict[str, float], "correct=1,format=0.2", {"correct": 1.0, "format": 0.2}), (dict, "digits=3", {"digits": 3}),
    (dict[str, float], "correct,format=0.2", {"correct": 1.0, "format": 0.2}),   # a bare name weighs 1, as before
    (dict, "base=chain", {"base": "chain"}), (list[float], [0.1, "0.2"], [0.1, 0.2]), (float, 0.5, 0.5),
    (int, 2.5, 2.5),                  # not text: left for the field's rule to refuse
    (list[str], [666, "x"], ["666", "x"]),                      # YAML `forbidden: [666]`
])
def test_read_as(tp, text, value):
    assert read_as(tp, text) == value


@pytest.mark.parametrize("tp,text,needle", [
    (float, "abc", "must be a number"), (int, "2.5", "must be an integer"), (int | None, "x", "or none"),
    (list[float], "0.1,x", "comma-separated numbers"), (dict[str, float], "=1", "name=value pairs"), (dict, "digits", "name=value pairs"),
    (bool, "maybe", "true or false"),
])
def test_read_as_says_what_is_expected(tp, text, needle):
    with pytest.raises(ValueError, match=needle):
        read_as(tp, text)


def test_yaml_numbers_are_numbers_and_recipes_are_names(tmp_path):
    """YAML 1.1 reads `1e-3` as text; a config file sets the same fields, read by their declared type."""
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nrecipe: deepseek\nclip_eps: 1e-1\ntop_k: none\n"
                                     "reward_weights: {correct: '1', format: 0.5}\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml")
    assert isinstance(cfg.lr, float) and cfg.lr == 1e-3 and cfg.top_k is None
    assert cfg.reward_weights == {"correct": 1.0, "format": 0.5}
    assert (cfg.recipe, cfg.kl, cfg.baseline, cfg.clip_eps, cfg.clip_eps_high) == \
        ("deepseek", "loss:k3", "group_mean_std", 0.1, 0.1)
    cli = train_config({"lr": 5e-4}, str(tmp_path / "c.yaml"), digits=3)       # flags override the file
    assert (cli.lr, cli.recipe, cli.task_args) == (5e-4, "deepseek", {"digits": 3})


@pytest.mark.parametrize("text,needles", [
    ("lr: abc\n", ["c.yaml", "TrainConfig.lr='abc'", "must be a number"]),
    ("group_size: 2.5x\n", ["c.yaml", "group_size='2.5x'", "integer"]),
    ("betta: 0.1\n", ["c.yaml", "betta", "allowed"]),
    ("preset: deepseek\n", ["c.yaml", "'preset'", "recipe"]),
])
def test_a_config_file_value_that_does_not_read_names_the_file_the_setting_and_the_value(tmp_path, text, needles):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError) as e:
        TrainConfig.from_file(tmp_path / "c.yaml")
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_the_constructor_never_converts_text():
    with pytest.raises(ValueError, match="lr='1e-3'"):
        TrainConfig(lr="1e-3")
    assert read_settings(TrainConfig, {"lr": "1e-3"}) == {"lr": 1e-3}


# --- recipes by name ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_through_the_configs_is_the_presets_pieces(name):
    own = pieces(preset(name))
    recipe = TrainConfig(recipe=name).build_recipe()
    assert pieces(recipe) == own and recipe.name == name
    assert {k: getattr(TrainConfig(recipe=name), k) for k in PIECES} == own    # the config says what runs
    bandit = BanditConfig(recipe=name, group_size=4)
    assert pieces(bandit.build_recipe()) == own and (bandit.kl, bandit.baseline) == (own["kl"], own["baseline"])


def test_the_defaults_are_todays_seed_recipe():
    """Unchanged behaviour: k1 in the reward, group-mean baseline, the plain surrogate, per-sequence mean."""
    for cfg in (TrainConfig(), BanditConfig()):
        r = cfg.build_recipe()
        assert (r.kl, r.baseline.name, r.surrogate, r.aggregation.__name__) == \
            (KLInReward(K1), "group_mean", Surrogate(), "seq_mean_token_mean")
    assert (BanditConfig().kl, BanditConfig().baseline) == ("reward:k1", "group_mean")


def test_an_override_wins_and_the_rest_is_the_presets():
    cfg = TrainConfig(recipe="deepseek", kl="reward:k1", clip_eps=0.1)
    r = cfg.build_recipe()
    assert (str(r.kl), r.baseline.name, r.surrogate, cfg.aggregation) == \
        ("reward:k1", "group_mean_std", Surrogate(0.1, 0.1), "seq_mean_token_mean")
    assert r.name == "deepseek, kl=reward:k1, clip_eps=0.1, clip_eps_high=0.1"      # honest: not "deepseek"
    dapo = TrainConfig(recipe="dapo_like").build_recipe()
    assert dapo.surrogate == Surrogate(0.2, 0.28) and dapo.aggregation.__name__ == "token_mean"
    assert TrainConfig(recipe="dapo_like", clip_eps_high=0.3).build_recipe().surrogate == Surrogate(0.2, 0.3)
    assert TrainConfig(aggregation="constant_normaliser").build_recipe().aggregation.__name__ == \
        "constant_normaliser_weights"
    assert BanditConfig(recipe="rloo", kl="loss:k3").build_recipe().baseline.name == "leave_one_out"
    assert BanditConfig(recipe="deepseek", baseline="value").build_recipe().baseline is None   # the runner's learned value


def test_a_saved_config_from_before_the_presets_loads_and_means_the_same():
    """config.json written before `recipe`: kl, baseline and clip_eps explicit, on the seed recipe."""
    old = {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)
           if f.name not in ("recipe", "clip_eps_high", "aggregation")}
    for kl, baseline, clip in [("reward:k1", "group_mean", None), ("loss:k3", "leave_one_out", 0.2)]:
        cfg = TrainConfig.from_dict({**old, "kl": kl, "baseline": baseline, "clip_eps": clip})
        r = cfg.build_recipe()
        assert (str(r.kl), r.baseline.name, r.surrogate, r.aggregation.__name__) == \
            (kl, baseline, Surrogate(clip, clip), "seq_mean_token_mean")


def test_a_resumed_config_keeps_its_recipe():
    cfg = TrainConfig(recipe="dapo_like", kl="reward:k2")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert pieces(again.build_recipe()) == pieces(cfg.build_recipe()) and again.build_recipe().name == cfg.build_recipe().name


def test_recipe_on_the_command_line(capsys):
    assert main(["bandit", "--recipe", "deepseek", "--kl", "reward:k1", "--steps", "20", "--group-size", "4",
                 "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["recipe"], cfg["kl"], cfg["baseline"]) == ("deepseek", "reward:k1", "group_mean_std")
    cli = train_config(parse("train", ["--recipe", "dr_grpo", "--baseline", "group_mean_std"])[1])
    assert pieces(cli.build_recipe()) == {**pieces(preset("dr_grpo")), "baseline": "group_mean_std"}


def test_compose_names_pieces_and_refuses_unknown_ones():
    assert compose("seed").name == "seed" and compose("rloo", baseline="leave_one_out").name == "rloo"
    with pytest.raises(ValueError, match="clip"):
        compose("seed", clip=0.2)


def test_the_demo_table_runs_each_presets_own_pieces():
    from minigrpo.demo import compare_recipes

    rows = compare_recipes(BanditConfig(means=(0.2, 0.8), steps=10, group_size=4))
    for row in rows:
        own = pieces(preset(row["recipe"]))
        assert (row["kl"], row["baseline"], row["aggregation"]) == (own["kl"], own["baseline"], own["aggregation"])
        assert row["surrogate"] == str(Surrogate(own["clip_eps"], own["clip_eps_high"]))


# --- bad input: one line, exit 2 -----------------------------------------------------------------------

BAD = [
    (["bandit", "--lr", "abc"], "--lr='abc'"), (["bandit", "--steps", "1.5"], "--steps='1.5'"),
    (["bandit", "--means", "0.1,,x"], "--means='0.1,,x'"), (["bandit", "--recipe", "ppo", "--method", "dpo"], "recipe='ppo'"),
    (["bandit", "--kl", "loss:k9"], "kl='loss:k9'"), (["bandit", "--bogus"], "--bogus"),
    (["bandit", "--lr"], "--lr"), (["bandit", "stray"], "stray"), (["bandit", "--arms", "x"], "--arms='x'"),
    (["train", "--lr", "abc"], "--lr='abc'"), (["train", "--prompts", "two"], "--prompts='two'"),
    (["train", "--reward", "=2"], "--reward='=2'"), (["train", "--reward", "style=1"], "style"),
    (["train", "--clip-eps", "1.5"], "clip_eps=1.5"), (["train", "--clip-eps-high", "x"], "--clip-eps-high='x'"),
    (["train", "--aggregation", "mean"], "aggregation='mean'"), (["train", "--task-args", "digits"], "--task-args"),
    (["train", "--recipe", "rloo", "--group-size", "1"], "group_size=1"), (["train", "--digits", "0"], "digits=0"),
    (["train", "--resume", "/no/run", "--lr", "1"], "--lr"), (["train", "--config", "/no/such.yaml"], "such.yaml"),
    (["sft", "--careless", "x"], "--careless='x'"), (["sft", "--shape.n-head", "0"], "shape.n_head=0"),
    (["sft", "--device", "gpu0"], "gpu0"),
    (["reward-model"], "exactly one"), (["reward-model", "--synthetic", "nobody"], "synthetic='nobody'"),
    (["reward-model", "--synthetic", "closeness", "--steps", "0"], "steps=0"),
    (["bench", "--precision", "fp8"], "precision='fp8'"), (["bench", "--peer", "trl"], "--peer"),
    (["frobnicate"], "not a command"), ([], "usage"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) or "(none)" for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # nothing may be written, least of all into runs/
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    if argv:
        assert len(err.splitlines()) == 1 and err.startswith("minigrpo"), err
        assert "error:" in err and not re.search("[╭│╰]", err)
    assert needle in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_yaml_value_on_the_command_line_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("lr: fast\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "c.yaml" in err and "lr='fast'" in err


# --- sft never writes into the package -----------------------------------------------------------------

def test_sft_without_out_writes_a_new_run_folder_not_the_package(tmp_path, monkeypatch, capsys):
    from minigrpo.assets import asset_path

    package = asset_path("anchors")
    before = {p: p.stat().st_mtime_ns for p in package.rglob("*")}
    monkeypatch.chdir(tmp_path)
    assert main(["sft", "--steps", "2", "--batch-size", "4", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"]
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("sft-addition-") and (tmp_path / out).resolve() == run.resolve()
    assert (run / "config.json").exists() and "--steps 2" in json.loads((run / "sft.json").read_text())["command"]
    assert {p: p.stat().st_mtime_ns for p in package.rglob("*")} == before
