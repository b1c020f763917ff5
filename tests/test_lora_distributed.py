"""`accelerate launch` with 2 CPU processes (DDP, gloo) trains like one process and saves once (issue 11)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

# A Trainer script: tiny BERT (no dropout), Deep LoRA compressed on the same batch in every process,
# global batch 4 (4 per device alone, 2 per device with 2 processes), adapter written to argv[1].
SCRIPT = '''
import os, sys
import torch, transformers
import lowdim.lora.model as lm
from lowdim.lora import DeepLoRAConfig, DeepLoRATrainer, get_deep_lora_model

save = lm.save_adapter
def counted(*a, **k):  # count the writes
    print(f"SAVE rank={os.environ.get('RANK', '0')}", flush=True)
    return save(*a, **k)
lm.save_adapter = counted

torch.manual_seed(0)
cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=32, num_labels=1,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
base = transformers.BertForSequenceClassification(cfg)
model = get_deep_lora_model(base, DeepLoRAConfig(rank=4, init_scale=0.3))
g = torch.Generator().manual_seed(3)
ids, labels = torch.randint(1, 60, (8, 9), generator=g), torch.rand(8, generator=g) * 5
model.train()
model.compress(lambda m: m(input_ids=ids, labels=labels).loss)
world = int(os.environ.get("WORLD_SIZE", "1"))
args = transformers.TrainingArguments(
    sys.argv[1], learning_rate=1e-2, max_steps=3, per_device_train_batch_size=4 // world, use_cpu=True,
    report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
)
data = [{"input_ids": ids[i], "labels": labels[i]} for i in range(8)]
trainer = DeepLoRATrainer(model=model, args=args, train_dataset=data)
trainer.train()
if world > 1:
    print(f"BACKEND {torch.distributed.get_backend()}", flush=True)  # one write per process
trainer.save_model(sys.argv[1])
if world > 1:  # leave together: a rank that exits while gloo still runs can abort the job
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _launch(script, out) -> str:
    """``accelerate launch`` with 2 processes; a second try if the loopback port was taken meanwhile."""
    for _ in range(2):
        done = _run([
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
            str(script), str(out),
        ])
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    return _ok(done)


def test_two_cpu_processes_train_like_one_and_save_once(tmp_path):
    from safetensors.torch import load_file

    from lowdim.lora.io import CONFIG_NAME, WEIGHTS_NAME

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one = _ok(_run([sys.executable, str(script), str(tmp_path / "one")]))
    two = _launch(script, tmp_path / "two")
    assert one.count("SAVE") == 1 and two.count("SAVE rank=0") == 1 and two.count("SAVE") == 1
    assert two.count("BACKEND gloo") == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    a, b = load_file(tmp_path / "one" / WEIGHTS_NAME), load_file(tmp_path / "two" / WEIGHTS_NAME)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # gradients averaged over 2 halves
