"""The anchor of benches/train.rs: the same LoRA run as `kolmctl train`,
with PyTorch + PEFT on the CPU (or the GPU: settings "device": "cuda"), on the same GGUF (dequantized by
transformers' GGUF loader), the same data, chat template, assistant-only
loss, rank, alpha, targets, learning-rate schedule, clipping, steps and
threads. Prints one JSON line: tokens_per_second, first_loss, last_loss,
losses, steps, seconds.

Usage: python train_peft.py SETTINGS.json   (written by benches/train.rs)
"""

import json
import os
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

MODULES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
           "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def encode(tok, messages, max_len):
    """Tokens and the assistant-token mask, found as kolm-train finds them:
    the conversation rendered up to each assistant turn (with the generation
    prompt) vs. through it."""
    full = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    target = [False] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok(tok.apply_chat_template(messages[:i], tokenize=False,
                                             add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        through = tok(tok.apply_chat_template(messages[:i + 1], tokenize=False),
                      add_special_tokens=False)["input_ids"]
        for p in range(len(before), len(through)):
            target[p] = True
    return ids[:max_len], target[:max_len]


def main():
    s = json.load(open(sys.argv[1]))
    torch.manual_seed(s["seed"])
    torch.set_num_threads(s["threads"])
    d, f = os.path.dirname(s["base"]), os.path.basename(s["base"])
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    device = torch.device(s.get("device", "cpu"))
    model.to(device)
    model = get_peft_model(model, LoraConfig(
        r=s["rank"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
        target_modules=[MODULES[t] for t in s["targets"]], bias="none",
        task_type="CAUSAL_LM"))
    model.train()
    examples = []
    for line in open(s["data"]):
        if line.strip():
            e = json.loads(line)
            msgs = e.get("messages") or [
                {"role": "user", "content": e["prompt"]},
                {"role": "assistant", "content": e["completion"]}]
            examples.append(encode(tok, msgs, s["max_seq_len"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    total, warmup = s["steps"], s["warmup"]

    def lr_at(step):  # kolm-train's schedule, as a factor of the peak
        if step < warmup:
            return (step + 1) / warmup
        return (total - step) / max(1, total - warmup)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    bs = s["batch_size"]
    losses, tokens = [], 0
    started = time.perf_counter()
    for step in range(total):
        batch = [examples[(step * bs + i) % len(examples)] for i in range(bs)]
        t = max(len(ids) for ids, _ in batch)
        input_ids = torch.zeros((bs, t), dtype=torch.long)
        labels = torch.full((bs, t), -100, dtype=torch.long)
        attn = torch.zeros((bs, t), dtype=torch.long)
        for b, (ids, target) in enumerate(batch):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            attn[b, :len(ids)] = 1
            for p in range(1, len(ids)):
                if target[p]:
                    labels[b, p] = ids[p]
            tokens += len(ids)
        input_ids, labels, attn = input_ids.to(device), labels.to(device), attn.to(device)
        out = model(input_ids=input_ids, attention_mask=attn)
        logits = out.logits[:, :-1, :]
        lab = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
            ignore_index=-100, reduction="sum") / (lab != -100).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"peft step {step + 1}/{total} loss {loss.item():.4f}", file=sys.stderr)
    seconds = time.perf_counter() - started
    print(json.dumps({"tokens_per_second": tokens / seconds, "first_loss": losses[0],
                      "last_loss": losses[-1], "losses": losses, "steps": total,
                      "seconds": seconds, "tokens": tokens}))


if __name__ == "__main__":
    main()
