"""lowdim.repro: the figure registry, verdicts from the numbers, caching, the report and the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os

import pytest

from lowdim.cli import main
from lowdim.repro import Check, code_version, get_figure, registry, run_figure, verdict_of, write_report
from lowdim.repro._registry import _REGISTRY


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three figures run end to end at their 'test' size into one folder."""
    out = tmp_path_factory.mktemp("repro")
    return out, {f: run_figure(f, size="test", out=out) for f in ("003-fig2", "004-fig3", "000-fig14")}


def test_every_figure_is_complete():
    figures = registry()
    assert {"003-fig2", "003-fig3", "003-fig4", "003-fig5", "003-fig10", "004-fig1", "004-fig3", "004-fig8",
            "004-fig9", "000-fig4", "000-fig5", "000-fig13", "000-fig14", "000-fig18",
            "000-fig19"} <= set(figures)
    for fig_id, fig in figures.items():
        assert fig.id == fig_id and fig_id.split("-")[0] in fig.paper
        assert len(fig.caption) > 40 and len(fig.claim) > 40, fig_id
        assert {"quick", "paper"} <= set(fig.sizes) and set(fig.estimate) >= {"quick", "paper"}, fig_id
        assert fig.sizes["quick"] != fig.sizes["paper"] or fig.estimate["paper"] < 120, fig_id
        assert len(code_version(fig)) == 12, fig_id  # every source it depends on is found and hashed
        hashed = {fig.module, *fig.depends}  # the code that computes and checks it is in its code version
        assert {fig.compute.__module__, fig.check.__module__, fig.plot.__module__} <= hashed, fig_id
    # figures of different modules hash different sources; the same module, the same version
    assert code_version(figures["003-fig2"]) == code_version(figures["003-fig3"])
    assert code_version(figures["003-fig2"]) != code_version(figures["000-fig14"])


def test_verdict_is_computed_from_the_checks():
    ok, bad = Check("a", True, "1"), Check("b", False, "2")
    assert verdict_of([ok, ok]) == "held"
    assert verdict_of([ok, bad]) == "partly"
    assert verdict_of([bad]) == "did not hold"
    with pytest.raises(ValueError, match="at least one check"):
        verdict_of([])


def test_003_fig2_depth_prevents_overfitting(results):
    rec = results[1]["003-fig2"]
    runs = rec["data"]["runs"]
    deep = [r for r in runs if r["depth"] == 3]
    shallow = [r for r in runs if r["depth"] == 2]
    assert max(r["error"] for r in deep) < 1e-4                 # depth 3 recovers at every width
    assert shallow[-1]["error"] > 100 * shallow[0]["error"]      # depth 2 overfits when wide
    assert deep[-1]["iterations"] < deep[0]["iterations"]        # width speeds up convergence
    assert rec["verdict"] == "held"
    # the verdict follows the numbers: spoil them and the claim no longer holds
    spoiled = copy.deepcopy(rec["data"])
    for r in spoiled["runs"]:
        r["error"] = 0.5
    fig = get_figure("003-fig2")
    assert verdict_of(fig.check(spoiled, rec["settings"])) == "partly"   # only the iterations still hold
    for r in spoiled["runs"]:
        r["iterations"] = 1000 * r["width"]
    assert verdict_of(fig.check(spoiled, rec["settings"])) == "did not hold"


def test_004_fig3_invariant_subspace(results):
    rec = results[1]["004-fig3"]
    d, r = rec["settings"]["d"], rec["settings"]["rank"]
    data = rec["data"]
    assert data["repeated_at_rho"] == d - 2 * r
    assert data["max_relative_residual"] < 1e-12
    angles = data["layers"]["1"]["angle_v"]
    assert max(max(a[2 * r:]) for a in angles) < 1e-6 < 0.3 < max(max(a[:2 * r]) for a in angles)
    assert rec["verdict"] == "held"


def test_000_fig14_sensing(results):
    rec = results[1]["000-fig14"]
    o, c = rec["data"]["original"], rec["data"]["compressed"]
    at_stop = o["error"][o["iterations"].index(c["iterations"][-1])]   # the DLN when C-DLN stopped
    assert c["error"][-1] <= rec["settings"]["target_error"] < at_stop
    assert all(ec <= eo for ec, eo in zip(c["error"][1:], o["error"][1:]))
    assert rec["verdict"] == "held"


def test_outputs_and_report(results):
    out, recs = results
    for fig_id, rec in recs.items():
        png, js = out / fig_id / f"{fig_id}.png", out / fig_id / f"{fig_id}.json"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        stored = json.loads(js.read_text())
        assert stored["verdict"] == rec["verdict"] and stored["settings"] == rec["settings"]
        assert {"torch", "numpy", "python"} <= set(stored["versions"])
    html, md = write_report(out)
    page = html.read_text()
    assert page.count("data:image/png;base64,") == len(recs)
    for fig_id in recs:
        assert f'id="{fig_id}"' in page and f"{fig_id}/{fig_id}.png" in md.read_text()


def test_stored_json_is_standard(tmp_path, monkeypatch):
    """NaN and inf in a figure's numbers are stored as null: the JSON parses without extensions."""
    fig = get_figure("004-fig3")

    def compute(s, seed, progress):
        return {**fig.compute(s, seed, progress), "interval": [0.5, float("nan"), float("inf")]}

    monkeypatch.setitem(_REGISTRY, fig.id, dataclasses.replace(fig, compute=compute))
    rec = run_figure(fig.id, size="test", out=tmp_path)
    assert rec["data"]["interval"][0] == 0.5 and math.isnan(rec["data"]["interval"][1])  # in memory
    text = (tmp_path / fig.id / f"{fig.id}.json").read_text()
    stored = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert stored["data"]["interval"] == [0.5, None, None] and stored["verdict"] == rec["verdict"]


def test_rerun_is_skipped_unless_changed_or_forced(tmp_path):
    first = run_figure("004-fig3", size="test", out=tmp_path)
    js = tmp_path / "004-fig3" / "004-fig3.json"
    stamp = os.stat(js).st_mtime_ns
    again = run_figure("004-fig3", size="test", out=tmp_path)
    assert again["reused"] and os.stat(js).st_mtime_ns == stamp and again["key"] == first["key"]
    forced = run_figure("004-fig3", size="test", out=tmp_path, force=True)
    assert not forced["reused"] and os.stat(js).st_mtime_ns != stamp
    other = run_figure("004-fig3", size="test", out=tmp_path, seed=1)
    assert not other["reused"] and other["key"] != first["key"] and other["seed"] == 1


def test_cli_list_run_and_errors(tmp_path, capsys):
    assert main(["repro", "004-fig3", "--size", "test", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()
    assert main(["repro", "list", "--out", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "003-fig2" in listing and "held (test)" in listing
    assert main(["repro", "004-fig3", "--size", "test", "--out", str(tmp_path)]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["repro", "003-fig99", "--out", str(tmp_path)]) == 1
    assert "unknown figure id '003-fig99'" in capsys.readouterr().err
    for bad, said in ((["--threads", "0"], "--threads must be an integer >= 1, got 0"),
                      (["--seed", "-1"], "--seed must be an integer >= 0, got -1")):
        assert main(["repro", "004-fig3", "--size", "test", "--out", str(tmp_path / "bad"), *bad]) == 1
        assert said in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_004_fig10_non_whitened_data_keeps_the_bulk_approximately(tmp_path):
    """Seed 004 Fig. 10: raw Gaussian X; the bulk singular values stay at ε and W_1 barely moves on
    their subspace (exactly 0 for whitened data), while 2 d_y directions move."""
    rec = run_figure("004-fig10", size="test", out=tmp_path)
    data = rec["data"]
    assert data["loss"][1] < 1e-3 * data["loss"][0] and data["condition_xxt"] > 2  # not whitened
    assert data["bulk_change"] < 0.05 and max(data["drift_moving"]) > 0.3
    assert max(data["drift"]) < 0.25 * max(data["drift_moving"])
    assert rec["verdict"] == "held"
    data["drift"] = [2 * max(data["drift_moving"])]  # the verdict follows the numbers
    assert verdict_of(get_figure("004-fig10").check(data, rec["settings"])) == "partly"
