"""cnnzoo experiment: listing, claims judged on given numbers, commands that parse back to the
same run, and one tiny experiment end to end (JSON schema, figure, resuming trains nothing)."""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

import cnnzoo.studies.league as league
from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command
from cnnzoo.cli.train import train_config
from cnnzoo.studies.experiments import (
    EXPERIMENTS,
    Claim,
    finding,
    get_experiment,
    judge,
    mean_std,
    plot_experiment,
    recorded_out,
    run_config,
    run_experiment,
)
from cnnzoo.training.config import RECIPES, train_command


def variant(name: str, top1s: list[float]) -> dict:
    mean, std = mean_std(top1s)
    return dict(name=name, top1_mean=mean, top1_std=std, runs=[dict(seed=i, test_top1=t) for i, t in enumerate(top1s)])


def test_list_names_every_experiment(capsys):
    assert run_command(build_parser().parse_args(["experiment", "--list", "--json"])) == 0
    out = capsys.readouterr().out
    listed = json.loads(out.strip().splitlines()[-1])
    assert list(listed) == ["stack3x3", "bn-dropout", "cardinality", "se", "mobilenet"]
    assert all(name in out for name in listed)


def test_unknown_experiment_is_a_clear_error(capsys):
    assert run_command(build_parser().parse_args(["experiment", "stack5x5"])) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'stack5x5'" in err and "Did you mean: stack3x3" in err
    assert run_command(build_parser().parse_args(["experiment"])) == 2
    assert "--list" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        run_experiment("se", seeds=0)


def test_mean_std_and_the_three_verdicts():
    mean, std = mean_std([0.90, 0.91, 0.92])
    assert mean == pytest.approx(0.91) and std == pytest.approx(0.01)  # sample std (n - 1)
    claim = Claim("a", "b", "a beats b")
    # difference 2 points, standard error sqrt(0.01^2/3 + 0.01^2/3) = 0.82 points: beyond 2x
    held = judge(claim, variant("a", [0.92, 0.93, 0.94]), variant("b", [0.90, 0.91, 0.92]))
    assert held["verdict"] == "holds" and held["difference"] == pytest.approx(0.02)
    assert held["standard_error"] == pytest.approx((2 * 0.01 ** 2 / 3) ** 0.5)
    assert "+2.00 points" in held["text"] and held["text"].endswith("holds")
    assert judge(claim, variant("a", [0.90, 0.91, 0.92]), variant("b", [0.92, 0.93, 0.94]))["verdict"] == "does not hold"
    # difference 1 point against a standard error of 0.82: within noise
    assert judge(claim, variant("a", [0.91, 0.92, 0.93]), variant("b", [0.90, 0.91, 0.92]))["verdict"] == "within noise"
    # "no-worse": 2 points worse is beyond the noise, unless the tolerance allows 1.5 of them
    no_worse = Claim("a", "b", "a is as good as b", kind="no-worse")
    worse_a = (variant("a", [0.90, 0.91, 0.92]), variant("b", [0.92, 0.93, 0.94]))
    assert judge(no_worse, *worse_a)["verdict"] == "does not hold"
    assert judge(Claim("a", "b", "t", kind="no-worse", tolerance=0.015), *worse_a)["verdict"] == "holds"
    assert judge(claim, variant("a", [0.95]), variant("b", [0.90]))["verdict"].startswith("not judged")


def test_finding_judges_every_claim_of_an_experiment():
    exp = get_experiment("se")
    numbers = [variant("none", [0.900, 0.901, 0.902]), variant("se-r16", [0.910, 0.911, 0.912]),
               variant("se-r4", [0.903, 0.900, 0.906])]
    result = finding(exp, numbers)
    # se-r16 - none: +1.0 points, standard error 0.08; se-r4 - none: +0.3, error 0.18 (2x = 0.37);
    # se-r4 - se-r16: -0.8 points, error 0.18: "no worse" fails
    assert [c["verdict"] for c in result["claims"]] == ["holds", "within noise", "does not hold"]
    assert result["holds"] is False and result["text"].startswith("1 of 3 claims hold.")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_runs_command_parses_back_to_its_config(name):
    exp = EXPERIMENTS[name]
    assert len(exp.recipe) and {c.better for c in exp.claims} | {c.worse for c in exp.claims} <= \
        {v.name for v in exp.variants}
    for v in exp.variants:
        cfg = run_config(exp, v, 2, "runs/x y", epochs=1, data_dir="/data/f mnist", threads=2)
        words = shlex.split(train_command(cfg))
        assert words[:2] == ["cnnzoo", "train"] and "--recipe" not in words
        args = build_parser().parse_args(words[1:])
        assert train_config(args) == cfg
        assert cfg.out == f"runs/x y/{name}/{v.name}/seed2" and cfg.epochs == 1 and cfg.seed == 2


def test_figures_of_every_kind(tmp_path):
    """The points, MACs-series, curves and paper panels, drawn from given numbers."""
    for name in ("bn-dropout", "mobilenet"):
        exp = EXPERIMENTS[name]
        variants = []
        for i, v in enumerate(exp.variants):
            entry = dict(variant(v.name, [0.8 + 0.01 * i, 0.81 + 0.01 * i]), params=1000 * (i + 1), macs=1e6 * (i + 1))
            if v.paper:
                entry["paper"] = v.paper
            variants.append(entry)
        result = dict(variants=variants, finding=finding(exp, variants))
        curve = dict(epoch=[1, 2], train_error=[0.3, 0.2], test_error=[0.35, 0.25])
        path = plot_experiment(exp, result, {v.name: [curve, curve] for v in exp.variants}, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_experiment_end_to_end_and_resumed(fmnist_small, tmp_path, monkeypatch, capsys):
    common = dict(seeds=2, epochs=1, out=tmp_path / "runs", results=tmp_path / "docs", progress=False,
                  data_dir=str(fmnist_small), threads=1, train_subset=128, test_subset=200)
    result = run_experiment("stack3x3", **common)
    saved = json.loads((tmp_path / "docs" / "stack3x3.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert {"name", "question", "variants", "finding"} <= set(saved) and saved["name"] == "stack3x3"
    assert [v["name"] for v in saved["variants"]] == ["5x5", "3x3-3x3", "1x5-5x1"]
    for v in saved["variants"]:
        assert {"name", "params", "macs", "top1_mean", "top1_std", "runs"} <= set(v)
        assert v["params"] > 0 and v["macs"] > 0 and len(v["runs"]) == 2
        assert v["top1_mean"] == pytest.approx(sum(r["test_top1"] for r in v["runs"]) / 2)
        for seed, run in enumerate(v["runs"]):
            assert set(run) == {"seed", "test_top1", "train_seconds", "command"} and run["seed"] == seed
            summary = json.loads((tmp_path / "runs" / "stack3x3" / v["name"] / f"seed{seed}" / "summary.json").read_text())
            assert run["test_top1"] == summary["test_top1"] and run["train_seconds"] == summary["train_seconds"]
            assert f"--seed {seed}" in run["command"] and "--train-subset 128" in run["command"]
    params = {v["name"]: v["params"] for v in saved["variants"]}
    assert params["1x5-5x1"] < params["5x5"] < params["3x3-3x3"]
    assert len(saved["finding"]["claims"]) == 2 and saved["finding"]["text"]
    assert (tmp_path / "docs" / "stack3x3.png").read_bytes()[:4] == b"\x89PNG"

    # A second call finds every run finished: it trains nothing and writes the same numbers.
    calls = []
    monkeypatch.setattr(league, "train", lambda cfg, **kw: calls.append(cfg) or {})
    again = run_experiment("stack3x3", **common)
    assert calls == [] and again["variants"] == result["variants"]
    # Other settings for runs already on disk are refused before anything is trained.
    with pytest.raises(ValueError, match="other settings"):
        run_experiment("stack3x3", **{**common, "train_subset": 256})
    assert calls == []


COMMITTED = sorted((Path(__file__).resolve().parents[2] / "docs" / "experiments").glob("*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_results_reproduce_by_their_commands_and_their_finding_is_computed(path):
    """docs/experiments/*.json, behind the README's figures: each run's command trains that variant
    of the experiment as it is defined now, and the means and the finding follow from the runs."""
    saved = json.loads(path.read_text())
    exp = EXPERIMENTS[saved["name"]]
    assert [v["name"] for v in saved["variants"]] == [v.name for v in exp.variants]
    for v, spec in zip(saved["variants"], exp.variants):
        assert len(v["runs"]) >= 3
        for run in v["runs"]:
            cfg = train_config(build_parser().parse_args(shlex.split(run["command"])[1:]))
            expected = run_config(exp, spec, run["seed"], "x", threads=cfg.threads)
            assert dataclasses.replace(cfg, out=None) == dataclasses.replace(expected, out=None), run["command"]
        assert (v["top1_mean"], v["top1_std"]) == pytest.approx(mean_std([r["test_top1"] for r in v["runs"]]))
    assert saved["finding"] == finding(exp, saved["variants"])


def test_recorded_commands_name_run_folders_relative_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert recorded_out(tmp_path / "runs" / "stack3x3" / "5x5" / "seed0") == "runs/stack3x3/5x5/seed0"
    assert recorded_out("/elsewhere/expruns/stack3x3/5x5/seed0") == "runs/experiments/stack3x3/5x5/seed0"
    assert recorded_out("my runs/stack3x3/5x5/seed1") == "my runs/stack3x3/5x5/seed1"
    for path in COMMITTED:
        for v in json.loads(path.read_text())["variants"]:
            for run in v["runs"]:
                out = shlex.split(run["command"])[shlex.split(run["command"]).index("--out") + 1]
                assert out.startswith("runs/experiments/"), run["command"]


def test_the_one_cycle_recipe_is_the_fast_recipes_optimiser_on_the_base_recipe():
    from cnnzoo.studies.experiments import BASE_RECIPE, ONE_CYCLE_RECIPE

    fast = RECIPES["fast"]
    optimiser = ("opt", "momentum", "weight_decay", "sched", "label_smoothing")
    assert ONE_CYCLE_RECIPE == dict(BASE_RECIPE, **{k: fast[k] for k in optimiser},
                                    lr=fast["lr"] * BASE_RECIPE["batch_size"] / fast["batch_size"])
    assert BASE_RECIPE is RECIPES["experiments"] and ONE_CYCLE_RECIPE is RECIPES["experiments-one-cycle"]
