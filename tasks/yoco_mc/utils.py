"""custom_dataset loader for yoco_mc_facts: reads facts.jsonl next to this file (independent of the CWD)."""

import json
from pathlib import Path


def load(**_options):
    """Return ``{"test": Dataset}``; lm-eval passes metadata and model_args as keywords, which are ignored."""
    import datasets

    lines = Path(__file__).with_name("facts.jsonl").read_text(encoding="utf-8").splitlines()
    return {"test": datasets.Dataset.from_list([json.loads(x) for x in lines if x.strip()])}
