"""Few-shot NLG (seed 003, App. C): the E2E reader, the metric wiring, and one training step of a
tiny encoder–decoder with Deep LoRA adapters (random weights, no download)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowdim.lora import adapter_layers, get_deep_lora_model
from lowdim.lora.nlg import (
    E2ESplit,
    NLGConfig,
    copy_baseline,
    e2e_file,
    encode_pairs,
    few_shot_pairs,
    generate,
    load_seq2seq,
    mr_values,
    new_module_names,
    read_e2e,
    seq2seq_adapter_config,
    sequence_loss,
    train_seq2seq,
)
from lowdim.lora.nlg_metrics import nlg_scores, unavailable_metrics

# EncoderDecoderModel warns on every labelled forward that its loss moved in v4.12 (irrelevant here)
pytestmark = pytest.mark.filterwarnings("ignore:Version v4.12.0:FutureWarning")

E2E_TEXT = (
    'mr,ref\n'
    '"name[The Vaults], eatType[pub], near[Café Adriatic]","The Vaults pub near Café Adriatic, prices £30."\n'
    '"name[The Vaults], eatType[pub], near[Café Adriatic]",The Vaults is a pub.\n'
    '"name[Blue Spice], area[city centre]",Blue Spice is in the city centre.\n'
    '"name[The Vaults], eatType[pub], near[Café Adriatic]","Near Café Adriatic,   the Vaults."\n'
)


def test_read_e2e_groups_all_references_by_mr(tmp_path):
    path = tmp_path / "trainset.csv"
    path.write_text(E2E_TEXT, encoding="utf-8")
    split = read_e2e(path)
    assert split.mrs == ("name[The Vaults], eatType[pub], near[Café Adriatic]",
                         "name[Blue Spice], area[city centre]")
    assert split.refs[0] == ("The Vaults pub near Café Adriatic, prices £30.", "The Vaults is a pub.",
                             "Near Café Adriatic, the Vaults.")  # whitespace runs collapsed
    assert split.subset([1]).refs == (("Blue Spice is in the city centre.",),)
    assert e2e_file("test", tmp_path) == tmp_path / "testset_w_refs.csv"


def test_read_e2e_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("meaning,text\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1 must be the header 'mr,ref'"):
        read_e2e(bad)
    bad.write_text('mr,ref\n"name[A]",ok\n"name[B]",x,extra\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3"):
        read_e2e(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_e2e(tmp_path / "absent.csv")


def test_real_e2e_test_split(shared_data):
    split = read_e2e(e2e_file("test", shared_data / "e2e"))
    assert len(split) == 630 and sum(map(len, split.refs)) == 4693  # SOURCES.md counts


def test_mr_slots_copy_baseline_and_few_shot_sampling():
    assert mr_values("name[The Vaults], customer rating[5 out of 5]") == [
        ("name", "The Vaults"), ("customer rating", "5 out of 5")]
    assert copy_baseline("name[A], food[Thai]") == "A, Thai"
    with pytest.raises(ValueError, match="not an E2E meaning representation"):
        mr_values("name[A] food Thai")
    split = E2ESplit(tuple(f"name[M{i}]" for i in range(10)),
                     tuple((f"r{i}a", f"r{i}b") for i in range(10)))
    src, tgt = few_shot_pairs(split, 4, seed=3, pool=[1, 3, 5, 7, 9])
    assert (src, tgt) == few_shot_pairs(split, 4, seed=3, pool=[1, 3, 5, 7, 9])  # same for both methods
    assert len(set(src)) == 4 and all(int(s[6:-1]) % 2 == 1 for s in src)
    assert all(t in split.refs[split.mrs.index(s)] for s, t in zip(src, tgt))
    with pytest.raises(ValueError, match="n = 6"):
        few_shot_pairs(split, 6, seed=0, pool=[1, 3, 5, 7, 9])


HYPS = ["the vaults is a pub near cafe adriatic .", "blue spice is a coffee shop in the city centre"]
REFS = [["the vaults is a pub near cafe adriatic .", "a pub called the vaults"],
        ["blue spice is in the city centre", "in the city centre there is a coffee shop , blue spice",
         "blue spice coffee shop , city centre"]]


def test_metrics_match_independent_package_calls():
    from nltk.translate.bleu_score import corpus_bleu
    from nltk.translate.nist_score import corpus_nist
    from pycocoevalcap.cider.cider import Cider
    from rouge_score import rouge_scorer

    s = nlg_scores(HYPS, REFS)
    tok = [[r.split() for r in rs] for rs in REFS]  # the texts are already 13a-tokenized
    # sacrebleu's corpus BLEU and nltk's (unsmoothed, closest reference length) are the same formula
    assert s["bleu"] == pytest.approx(corpus_bleu(tok, [h.split() for h in HYPS]), abs=1e-9)
    assert 0.3 < s["bleu"] < 1
    assert s["nist"] == pytest.approx(corpus_nist(tok, [h.split() for h in HYPS], n=5), abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge2"])
    best = [max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(HYPS, REFS)]
    assert best[0] == 1.0 and s["rougeL"] == pytest.approx(np.mean(best), abs=1e-12)
    cider = Cider().compute_score({i: rs for i, rs in enumerate(REFS)}, {i: [h] for i, h in enumerate(HYPS)})
    assert s["cider"] == pytest.approx(cider[0], abs=1e-12)
    assert 0.3 < s["meteor"] < 1  # METEOR 1.5 (Java)
    perfect = nlg_scores([REFS[0][0]], [REFS[0]], ["bleu", "rouge1", "meteor"])
    assert perfect["bleu"] == pytest.approx(1.0) and perfect["rouge1"] == 1.0
    assert perfect["meteor"] > 0.95  # only METEOR's fragmentation penalty (1 chunk) below 1
    assert perfect["meteor"] > s["meteor"]


def test_metric_input_errors_and_missing_java(monkeypatch):
    with pytest.raises(ValueError, match="one list of references per hypothesis"):
        nlg_scores(HYPS, REFS[:1])
    with pytest.raises(ValueError, match="at least one non-empty reference"):
        nlg_scores(["x"], [[""]])
    with pytest.raises(ValueError, match="unknown metric 'bertscore'"):
        nlg_scores(HYPS, REFS, ["bertscore"])
    import lowdim.lora.nlg_metrics as nm

    monkeypatch.setattr(nm.shutil, "which", lambda name: None)
    assert "Java" in unavailable_metrics()["meteor"]
    with pytest.raises(RuntimeError, match="meteor: METEOR 1.5 runs on Java"):
        nlg_scores(HYPS, REFS, ["bleu", "meteor"])
    assert nlg_scores([""], [["a b"]], ["nist"])["nist"] == 0.0  # all outputs empty
    assert math.isnan(nlg_scores(["a b"], [["a b c d e"]], ["nist"])["nist"])  # no 5-gram: nltk undefined


WORDS = ["the", "vaults", "is", "a", "pub", "name", "eattype", "near", "blue", "spice", "[", "]", ",", "."]


def _tiny_bert(folder):
    """A random 2-layer BERT and its WordPiece tokenizer, saved in ``folder`` (a checkpoint)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("\n".join(specials + WORDS) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return BertModel.from_pretrained(folder)


def test_bert2bert_warm_start_new_modules(tmp_path):
    pretrained = _tiny_bert(tmp_path)
    model, tok, new = load_seq2seq(tmp_path)
    assert new == ("decoder.bert.encoder.layer.0.crossattention",
                   "decoder.bert.encoder.layer.1.crossattention", "decoder.cls.predictions.transform")
    assert model.encoder.pooler is None
    w = pretrained.encoder.layer[1].attention.self.query.weight
    assert torch.equal(model.encoder.encoder.layer[1].attention.self.query.weight, w)
    assert torch.equal(model.decoder.bert.encoder.layer[1].attention.self.query.weight, w)
    assert model.config.decoder_start_token_id == tok.cls_token_id
    assert model.config.eos_token_id == tok.sep_token_id
    cfg = NLGConfig()
    batch = encode_pairs(tok, ["name [ the vaults ]"], ["the vaults is a pub ."], cfg, tok.cls_token_id)
    assert batch["labels"][0, 0] == tok.convert_tokens_to_ids("the")  # [CLS] starts decoding; not a label
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert new_module_names(net, ["1.weight"]) == ()  # a module counts only when all of it is new


@pytest.mark.parametrize("method", ["deeplora", "lora"])
def test_one_training_step_changes_only_adapters_and_new_modules(tmp_path, method):
    _tiny_bert(tmp_path)
    torch.manual_seed(1)
    base, tok, new = load_seq2seq(tmp_path)
    model = get_deep_lora_model(base, seq2seq_adapter_config(method, new, rank=2), task_heads=False)
    layers = dict(adapter_layers(model.base_model))
    assert "encoder.encoder.layer.0.attention.self.query" in layers
    assert "decoder.bert.encoder.layer.1.output.dense" in layers
    assert not any("crossattention" in n or n.startswith("decoder.cls") for n in layers)  # new: not adapted
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    src = ["name [ the vaults ] , eattype [ pub ]", "name [ blue spice ] , near [ the vaults ]"]
    tgt = ["the vaults is a pub .", "blue spice is near the vaults ."]
    cfg = NLGConfig(lr=1e-2, head_lr=1e-2, max_steps=1, max_new_tokens=5, num_beams=2)
    fit = train_seq2seq(model, tok, src, tgt, cfg, seed=0)
    assert fit["steps"] == 1 and math.isfinite(fit["final_loss"])  # Deep LoRA: compressed, then 1 step
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any("crossattention" in n for n in changed)
    assert any(".lora_" in n or "factors" in n for n in changed)
    frozen = [n for n in before if n not in trainable]
    assert all("crossattention" not in n and "cls.predictions.transform" not in n for n in frozen)
    assert math.isfinite(sequence_loss(model, tok, src, tgt, cfg))
    out = generate(model, tok, src, cfg)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_encoder_decoder_checkpoint_loads_as_is_and_trains(tmp_path):
    """The T5/BART path: a seq2seq checkpoint has no new modules; adapters on every linear but lm_head."""
    from transformers import BartConfig, BartForConditionalGeneration

    _tiny_bert(tmp_path)  # its tokenizer; the BART weights replace the BERT ones
    config = BartConfig(vocab_size=len(WORDS) + 5, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                        eos_token_id=3, decoder_start_token_id=3, forced_bos_token_id=None)
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(tmp_path)
    base, tok, new = load_seq2seq(tmp_path)
    assert type(base).__name__ == "BartForConditionalGeneration" and new == ()
    model = get_deep_lora_model(base, seq2seq_adapter_config("deeplora", new, rank=2), task_heads=False)
    names = {n.rsplit(".", 1)[-1] for n, _ in adapter_layers(model.base_model)}
    assert names == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    cfg = NLGConfig(max_steps=2, max_new_tokens=4, num_beams=2)
    fit = train_seq2seq(model, tok, ["name [ the vaults ]"], ["the vaults is a pub ."], cfg)
    assert fit["steps"] == 2 and math.isfinite(fit["final_loss"])
    assert len(generate(model, tok, ["name [ blue spice ]"], cfg)) == 1
