"""The needle test as lm-eval tasks (``tasks/niah/*.yaml``; use ``--include_path tasks/niah``).

The YAMLs point ``custom_dataset`` at the shims in ``tasks/niah/utils.py``, which call :func:`build_docs` here.
lm-eval hands the task its metadata: the ``--model_args`` of the run (so ``pretrained``/``gguf_file`` name the
tokenizer) merged with ``--metadata`` (JSON). Recognized keys:

* ``tokenizer``: ``yoco-cl100k``, ``cl100k``, or a local tokenizer folder (``path::file.gguf`` for a GGUF);
  defaults to ``pretrained`` (+ ``gguf_file``) from the model args. ``pkg:NAME`` means an installed package's folder.
* ``lengths`` (default ``4k``), ``depths`` (default ``0:100:11``), ``trials`` (1), ``seed`` (0),
  ``haystack`` (``pg-essays``), ``num_needles``, ``key_type``, ``value_type``;
* ``chat_template`` (false): build the prompt inside the tokenizer's chat template, counted in the length. Do
  not also pass lm-eval's ``--apply_chat_template`` (that would add the template a second time).
* ``prompt_prefix_tokens`` (0): tokens the model adds in front (1 if it prepends BOS, e.g. ``add_bos_token=True``).

The prompt lengths are exact under that tokenizer. lm-eval left-truncates prompts longer than the model's
``max_length`` minus ``max_gen_toks``: keep lengths below that. Scoring is :func:`yoco_eval.niah.score.score_output`.
"""

from __future__ import annotations

from yoco_eval.axes import parse_depths, parse_lengths
from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.builder import PromptBuilder, PromptFormat
from yoco_eval.niah.grid import make_grid
from yoco_eval.niah.score import score_output
from yoco_eval.niah.variants import get_variant
from yoco_eval.tokenizer import load_tokenizer


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _tokenizer(meta: dict):
    name = meta.get("tokenizer")
    if not name and meta.get("pretrained"):
        name = str(meta["pretrained"]) + (f"::{meta['gguf_file']}" if meta.get("gguf_file") else "")
    if not name:
        raise YocoEvalError(
            'the niah tasks need a tokenizer to size prompts: pass --metadata \'{"tokenizer": "yoco-cl100k"}\' '
            "or a local pretrained= model"
        )
    from yoco_eval.loading import resolve_model  # pkg:NAME, shipped model names, smollm2-135m-instruct

    head, sep, tail = str(name).partition("::")
    return load_tokenizer(resolve_model(head) + sep + tail)


def build_docs(variant: str = "single", **meta) -> dict:
    """Docs for one lm-eval task: one per (length, depth, trial), with the exact-length prompt text."""
    import datasets

    tok = _tokenizer(meta)
    v = get_variant(
        variant,
        num_needles=int(meta["num_needles"]) if meta.get("num_needles") else None,
        key_type=meta.get("key_type"),
        value_type=meta.get("value_type"),
    )
    fmt = PromptFormat()
    if _truthy(meta.get("chat_template", False)):
        from yoco_eval.niah.models import chat_frame

        hf = getattr(tok, "hf_tokenizer", None)
        if hf is None:
            raise YocoEvalError("chat_template needs a Hugging Face tokenizer with a chat template")
        fmt = chat_frame(hf, meta.get("system_prompt"), strip_bos=int(meta.get("prompt_prefix_tokens", 0)) > 0)
    builder = PromptBuilder(
        tok, str(meta.get("haystack", "pg-essays")), v, fmt, prefix_tokens=int(meta.get("prompt_prefix_tokens", 0))
    )
    lengths = parse_lengths(meta.get("lengths", "4k"))
    depths = parse_depths(meta.get("depths", "0:100:11"))
    docs = []
    for cell in make_grid(lengths, depths, int(meta.get("trials", 1)), int(meta.get("seed", 0))):
        p = builder.build(cell.length, cell.depth, cell.seed)
        docs.append(
            {
                "cell": cell.id,
                "prompt": p.text,
                "expected": list(p.expected),
                "metric": p.metric,
                "context_length": cell.length,
                "depth_percent": cell.depth,
                "trial": cell.trial,
                "prompt_tokens": p.n_tokens,
                "needle_positions": [n.token_position for n in p.needles],
                "tokenizer": getattr(tok, "name", ""),
            }
        )
    return {"test": datasets.Dataset.from_list(docs)}


def process_results(doc: dict, results: list[str]) -> dict:
    return {"score": score_output(results[0] if results else None, list(doc["expected"]), doc["metric"])}
