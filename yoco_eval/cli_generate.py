"""``yoco-eval generate`` and ``yoco-eval convert``."""

from __future__ import annotations

import argparse
import sys

from yoco_eval.errors import YocoEvalError


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help line (except required flags, empty defaults and helps that name it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


# Generation.finish_reason in words, for the summary line.
_WHY_STOPPED = {
    "length": "stopped at --max-new-tokens",
    "eos": "stopped at the end-of-text token",
    "stop": "stopped at a --stop string",
}


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """The loading flags: one per :class:`~yoco_eval.loading.LoadSpec` key (defaults and checks live there)."""
    from yoco_eval.generate import DEFAULT_CHUNK_SIZE

    chunks = ", ".join(f"{n} on {d}" for d, n in DEFAULT_CHUNK_SIZE.items())
    p.add_argument("--model", default=default_model, required=default_model is None,
                   help="checkpoint folder (ours, official params.json+checkpoint.pth, or HF Llama), preset, shipped "
                        "model (yoco-needle-7m) or smollm2-135m-instruct")  # fmt: skip
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (cuda when available; default)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16, or auto (bf16 on GPU, fp32 on CPU)")
    p.add_argument("--attn-backend", default="auto", help="attention kernels (default auto)")
    p.add_argument("--retention-backend", default="auto", help="gated-retention kernels (default auto)")
    p.add_argument("--chunk-size", default=None, help=f"prefill chunk length in tokens (default {chunks})")
    p.add_argument("--max-length", default=None, help="longest prompt + generation (default: the model's)")
    p.add_argument("--tokenizer", default=None, help="override the checkpoint's tokenizer")
    p.add_argument("--kv-dtype", default="auto",
                   help="YOCO's shared K/V storage: auto (the model dtype) or fp8 (e4m3 + scales: half the memory, "
                        "faster decode, lossy)")  # fmt: skip


def load_spec(args):
    """The :class:`~yoco_eval.loading.LoadSpec` of the loading flags (same keys as ``--model-args``)."""
    from yoco_eval.loading import LoadSpec

    spec, _ = LoadSpec.from_model_args(
        {"pretrained": args.model, "device": args.device, "dtype": args.dtype, "attn_backend": args.attn_backend,
         "retention_backend": args.retention_backend, "chunk_size": args.chunk_size,
         "max_length": getattr(args, "max_length", None), "tokenizer": args.tokenizer, "kv_dtype": args.kv_dtype},
        flag="--model", what="generate",
    )  # fmt: skip
    return spec


def load_engine(args):
    return load_spec(args).load_engine()


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt", formatter_class=_Defaults,
                       description="Generate a continuation of --prompt; the text goes to stdout, a summary line "
                                   "(tokens, why it stopped, time) to stderr.")  # fmt: skip
    add_model_args(p)
    p.add_argument("--prompt", required=True, help="the prompt text, or @FILE to read it from a file")
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=generate_main)


def generate_main(args) -> int:
    prompt = args.prompt
    if prompt.startswith("@"):
        try:
            prompt = open(prompt[1:], encoding="utf-8").read()
        except OSError as e:
            raise YocoEvalError(f"cannot read prompt file {prompt[1:]}: {e.strerror}") from None
    engine = load_engine(args)
    ids = engine.tokenizer.encode(prompt, bos=engine.tokenizer.bos_id is not None)
    out = engine.generate([ids], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, stop=args.stop, seed=args.seed)[0]  # fmt: skip
    sys.stdout.write(out.text + "\n")
    sys.stdout.flush()  # the text before the summary line when both go to one terminal
    why = _WHY_STOPPED.get(out.finish_reason, out.finish_reason)
    print(f"[{out.prompt_tokens} prompt tokens, {len(out.tokens)} generated, {why}; "
          f"prefill {out.prefill_s:.2f} s, decode {out.decode_s:.2f} s]", file=sys.stderr)  # fmt: skip
    return 0


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="save a checkpoint in yoco-eval's format or the official YOCO format",
                       formatter_class=_Defaults)  # fmt: skip
    p.add_argument("--model", required=True, help="checkpoint folder, preset or shipped model (yoco-needle-7m)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["yoco-eval", "official"], default="yoco-eval",
                   help="yoco-eval: config.json + model.safetensors; official: params.json + checkpoint.pth")
    p.set_defaults(func=convert_main)


def convert_main(args) -> int:
    from yoco_eval.loading import resolve_model
    from yoco_eval.model.checkpoint import load_model, save_model, save_official

    loaded = load_model(resolve_model(args.model))
    if args.format == "official":
        save_official(loaded.model, args.out)
    else:
        save_model(loaded.model, args.out)
    print(f"saved {args.out} ({args.format})")
    return 0


def add_parser(sub) -> None:
    add_generate_parser(sub)
    add_convert_parser(sub)
