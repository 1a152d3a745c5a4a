"""Needle-in-a-haystack engine: exact-length prompt generator, scorer and resumable sweep runner.

Python API::

    from yoco_eval.niah import PromptBuilder, get_variant, run_sweep, SweepConfig, FakeNeedleModel
    from yoco_eval.tokenizer import YOCOTokenizer

    builder = PromptBuilder(YOCOTokenizer(), "pg-essays", get_variant("single"))
    prompt = builder.build(length=131072, depth=50.0, seed=0)   # len(tokenizer.encode(prompt.text)) == 131072
    prompt.needles[0].token_position, prompt.expected

    summary = run_sweep(model, SweepConfig(lengths=[1024, 4096], depths=[0, 50, 100], trials=2,
                                           out="reports/runs/demo"))

See ``builder`` (exact lengths), ``variants`` (needle presets), ``score`` (metrics, Wilson intervals),
``grid`` (cells, seeds, the checked plan), ``store`` (the run folder's files, torn-write repair), ``runner``
(resume, sharding), ``models`` (NeedleModel protocol, lm-eval adapter) and ``cli``.
"""

from yoco_eval.niah.builder import PlacedNeedle, Prompt, PromptBuilder, PromptFormat
from yoco_eval.niah.corpus import Corpus, load_corpus
from yoco_eval.niah.grid import SweepConfig, cell_id, cell_seed, make_grid, plan_sweep
from yoco_eval.niah.models import (
    FakeNeedleModel,
    GenerationResult,
    LMEvalNeedleModel,
    NeedleModel,
    load_lm_eval_model,
    load_needle_model,
)
from yoco_eval.niah.runner import reconstruct_prompt, run_sweep
from yoco_eval.niah.score import aggregate, score_output, wilson
from yoco_eval.niah.store import load_results
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.niah.variants import VARIANTS, Variant, get_variant
from yoco_eval.tokenizer import TiktokenTokenizer, load_tokenizer

__all__ = [
    "PlacedNeedle",
    "Prompt",
    "PromptBuilder",
    "PromptFormat",
    "Corpus",
    "load_corpus",
    "FakeNeedleModel",
    "GenerationResult",
    "LMEvalNeedleModel",
    "NeedleModel",
    "load_lm_eval_model",
    "load_needle_model",
    "SweepConfig",
    "cell_id",
    "cell_seed",
    "load_results",
    "make_grid",
    "plan_sweep",
    "reconstruct_prompt",
    "run_sweep",
    "aggregate",
    "score_output",
    "wilson",
    "TiktokenTokenizer",
    "load_tokenizer",
    "tokenize_corpus",
    "VARIANTS",
    "Variant",
    "get_variant",
]
