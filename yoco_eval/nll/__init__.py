"""Long-sequence language modeling: NLL by position over long documents, as in the YOCO paper's Figure 6.

* :mod:`yoco_eval.nll.corpora` — offline, deterministic, exact-length documents (``book``, ``code``, user paths);
* :mod:`yoco_eval.nll.stream` — per-token NLL streamed through a model in chunks (flat memory in the length);
* :mod:`yoco_eval.nll.run` — the resumable JSONL runner (models x corpora);
* :mod:`yoco_eval.nll.cli` — ``yoco-eval nll``; the page is :mod:`yoco_eval.report.nll`.
"""
