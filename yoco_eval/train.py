"""Training recipe for the project's small embedded models (YOCO and a same-size Transformer).

Data: public-domain prose (the haystack corpus, e.g. Shakespeare plays) mixed with synthetic needle-retrieval
examples built by the SAME prompt builder the needle sweeps use (:mod:`yoco_eval.niah`), so the model learns
the exact task format. Each example is ``[BOS] prompt " value." [EOS]``; the loss is the mean next-token loss over
the whole sequence plus the mean loss over the answer tokens (retrieval is a few tokens of a long sequence).
Plain LM examples (no needle) are mixed in so the model also models text.

Run (GPU): ``python -m yoco_eval.train --arch yoco --out models/yoco-needle-7m --minutes 10 --haystack DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from yoco_eval.config import TransformerConfig, YOCOConfig
from yoco_eval.tokenizer import ByteTokenizer

SMALL = {
    "yoco": YOCOConfig(
        dim=256, n_layers=8, hidden_dim=768, n_self_heads=4, n_attn_heads=4, n_attn_kv_heads=2, vocab_size=264,
        rope_theta=10000.0, max_seq_len=2048, tokenizer="bytes", name="yoco-needle-7m",
    ),
    "transformer": TransformerConfig(
        dim=256, n_layers=8, hidden_dim=768, n_heads=4, n_kv_heads=2, vocab_size=264, rope_theta=10000.0,
        max_seq_len=2048, tokenizer="bytes", name="transformer-needle-7m",
    ),
}  # fmt: skip


@dataclass
class Example:
    ids: list[int]
    answer_start: int  # index of the first answer token in ids (len(ids) if no answer)


class ExampleStream(torch.utils.data.IterableDataset):
    """Endless, seeded stream of training examples; each DataLoader worker draws its own seed."""

    def __init__(self, haystack: str, max_len: int, needle_share: float, seed: int, variants=("single", "multi")):
        self.haystack, self.max_len, self.needle_share, self.seed, self.variants = (
            haystack, max_len, needle_share, seed, variants)  # fmt: skip

    def __iter__(self):
        from yoco_eval.niah.builder import PromptBuilder
        from yoco_eval.niah.corpus import load_corpus
        from yoco_eval.niah.tokens import tokenize_corpus
        from yoco_eval.niah.variants import VARIANTS

        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = random.Random(self.seed * 1000 + wid)
        tok = ByteTokenizer()
        corpus = tokenize_corpus(load_corpus(self.haystack), tok)
        builders = [PromptBuilder(tok, corpus, VARIANTS[v], prefix_tokens=1, verify=False) for v in self.variants]
        flat = corpus.ids  # the whole corpus, token ids back to back
        while True:
            if rng.random() < self.needle_share:
                b = rng.choice(builders)
                # favour short prompts (the retrieval signal is strongest there), still covering the full range
                length = 320 + int((self.max_len - 332) * rng.random() ** 2)
                try:
                    p = b.build(length, rng.uniform(0, 100), rng.randrange(1 << 30))
                except Exception:
                    continue
                answer = tok.encode(" " + p.expected[0] + ".")
                ids = [tok.bos_id, *p.ids.tolist()]
                yield Example(ids + answer + [tok.eos_id], len(ids))
            else:  # plain text: a random window of the corpus
                s = rng.randrange(0, max(1, len(flat) - self.max_len))
                yield Example([tok.bos_id, *flat[s : s + self.max_len - 1].tolist()], self.max_len)


def collate(batch: list[Example], pad: int):
    T = max(len(e.ids) for e in batch)
    x = torch.full((len(batch), T), pad, dtype=torch.long)
    w_ans = torch.zeros(len(batch), T)
    w_all = torch.zeros(len(batch), T)
    for i, e in enumerate(batch):
        x[i, : len(e.ids)] = torch.tensor(e.ids)
        w_all[i, : len(e.ids) - 1] = 1.0
        w_ans[i, e.answer_start - 1 : len(e.ids) - 1] = 1.0  # positions that predict the answer tokens
    return x, w_all, w_ans


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args) -> dict:
    from yoco_eval.loading import resolve_device
    from yoco_eval.model.checkpoint import build_model, init_weights, save_model

    torch.manual_seed(args.seed)
    device = resolve_device(getattr(args, "device", "auto"))
    dev = device.type  # autocast and the fused optimizer take the device type
    cfg = SMALL[args.arch].replace(max_seq_len=args.max_len)
    # plain-PyTorch chunkwise retention for training: fla-core refuses its gated backward on Triton < 3.7.1 (Hopper)
    model = init_weights(build_model(cfg, retention_backend="torch"), args.seed, std=0.02).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=dev == "cuda")
    stream = ExampleStream(args.haystack, args.max_len, args.needle_share, args.seed, tuple(args.variants.split(",")))
    loader = torch.utils.data.DataLoader(stream, batch_size=args.batch, num_workers=args.workers,
                                         collate_fn=lambda b: collate(b, ByteTokenizer.pad_id), prefetch_factor=4
                                         if args.workers else None)  # fmt: skip
    t0 = time.time()
    deadline = t0 + 60 * args.minutes
    est_total = args.steps
    log, step, tokens = [], 0, 0
    for x, w_all, w_ans in loader:
        if step >= est_total or time.time() > deadline:
            break
        # schedule on whichever budget runs out first: steps or wall-clock minutes
        frac = max(step / est_total, (time.time() - t0) / (60 * args.minutes))
        lr = lr_at(int(frac * 100_000), 100_000, args.lr, int(args.warmup / max(est_total, 1) * 100_000))
        for g in opt.param_groups:
            g["lr"] = lr
        x, w_all, w_ans = x.to(device, non_blocking=True), w_all.to(device), w_ans.to(device)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            logits = model(x[:, :-1])
        nll = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none")
        loss_all = (nll * w_all[:, :-1]).sum() / w_all.sum()
        loss_ans = (nll * w_ans[:, :-1]).sum() / w_ans.sum().clamp_min(1)
        loss = loss_all + args.answer_weight * loss_ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int(w_all.sum())
        if step % 50 == 0:
            rec = {"step": step, "s": round(time.time() - t0, 1), "lr": lr, "loss": loss_all.item(),
                   "answer_loss": loss_ans.item(), "tokens": tokens}  # fmt: skip
            log.append(rec)
            print(json.dumps(rec), flush=True)
        step += 1
    out = Path(args.out)
    model = model.to(torch.bfloat16)
    save_model(model, out)
    card = torch.cuda.get_device_name(device) if dev == "cuda" else "cpu"
    summary = {"arch": args.arch, "params": n_params, "steps": step, "tokens": tokens,
               "seconds": round(time.time() - t0, 1), "device": card,
               "args": {k: v for k, v in vars(args).items()}, "log": log}  # fmt: skip
    (out / "train_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="train a small embedded needle model (yoco or transformer)")
    p.add_argument("--arch", choices=sorted(SMALL), default="yoco")
    p.add_argument("--out", required=True)
    p.add_argument("--haystack", default="shakespeare", help="corpus name or folder of training prose")
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--needle-share", type=float, default=0.8)
    p.add_argument("--answer-weight", type=float, default=4.0, help="weight of the answer-token loss")
    p.add_argument("--variants", default="single,multi", help="needle variants mixed into training")
    p.add_argument("--workers", type=int, default=min(6, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available; default)")
    p.add_argument("--eval-haystack", default=None, help="after training: needle accuracy on this (unseen) haystack")
    p.add_argument("--eval-lengths", default="256,512,1024,2048,4096,8192")
    args = p.parse_args(argv)
    summary = train(args)
    if args.eval_haystack:
        lengths = [int(x) for x in args.eval_lengths.split(",")]
        ev = evaluate(args.out, args.eval_haystack, lengths, [0, 25, 50, 75, 100], trials=4, device=args.device)
        print(json.dumps(ev), flush=True)
        summary["eval"] = ev
        (Path(args.out) / "train_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


@torch.inference_mode()
def evaluate(model_dir: str, haystack: str, lengths: list[int], depths: list[float], trials: int, seed: int = 1,
             variant: str = "single", device: str | None = None) -> dict:  # fmt: skip
    """Needle retrieval of a trained small model: fraction of (length, depth, trial) cells whose greedy answer
    contains the needle's value. Prompts come from the sweep's own builder (BOS added by the engine)."""
    from yoco_eval.loading import LoadSpec
    from yoco_eval.niah.builder import PromptBuilder
    from yoco_eval.niah.variants import VARIANTS

    # float32 whatever the device: the accuracy of a small model should not depend on the card
    spec = LoadSpec(model_dir, device=device or "auto", dtype="float32", max_length=max(lengths) + 64)
    engine = spec.load_engine()
    tok = engine.tokenizer
    builder = PromptBuilder(tok, haystack, VARIANTS[variant], prefix_tokens=1)
    by_len = {}
    for L in lengths:
        hits = []
        for d in depths:
            for t in range(trials):
                p = builder.build(L, d, seed * 1_000_003 + L * 101 + int(d * 10) * 7 + t)
                out = engine.generate([[tok.bos_id, *p.ids.tolist()]], max_new_tokens=12, stop=["\n"])[0].text
                hits.append(float(p.expected[0] in out))
        by_len[L] = sum(hits) / len(hits)
    return {"haystack": haystack, "variant": variant, "depths": depths, "trials": trials, "accuracy_by_length": by_len}


if __name__ == "__main__":
    raise SystemExit(main())
