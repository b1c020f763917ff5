"""lowdim.repro's Deep LoRA figures (003-fig6, 003-fig7): their verdicts follow the numbers.

Running them end to end fine-tunes MiniLM (about a minute even at the test size), so the suite checks
the figure functions on study numbers of the documented STS-B run (docs/deep_lora.md) and on spoiled
copies; `lowdim repro 003-fig6 003-fig7` runs them for real.
"""

from __future__ import annotations

import copy

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
