"""yoco_nll_book / yoco_nll_code: NLL by position of one long document, in lm-eval, through any model.

The document is the first ``DOC_BYTES`` bytes of ``yoco-eval nll``'s ``book`` or ``code`` corpus (see
``yoco_eval/nll/corpora.py``: Shakespeare's plays then the PG essays; the Python standard library's sources in sorted
order). It is cut into octave buckets of byte position, ``[0, 128), [128, 256), ..., [8K, 16K)``, and each bucket
is one ``loglikelihood`` request: context = the whole document before the bucket, continuation = the bucket. So each
bucket is scored with the full preceding context (give ``max_length`` >= the document's token count in
``--model_args``; the byte-level models need ``max_length=16400``), and the per-bucket metric is that bucket's bits
per byte: ``bpb_<lo>_<hi>``. ``bits_per_byte`` aggregates every bucket, i.e. the whole document.

Positions are in bytes (not tokens) so that models with different tokenizers are compared at the same place in the
text. Bucket edges sit on the first character boundary at or after each byte edge that does not follow whitespace:
lm-eval moves a context's trailing whitespace into the continuation, which would make a bucket score bytes that
are not its own.
"""

from __future__ import annotations

DOC_BYTES = 16384
EDGES = [0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def bucket_name(lo: int, hi: int) -> str:
    return f"bpb_{lo:05d}_{hi:05d}"


def document_text(corpus: str, n_bytes: int = DOC_BYTES) -> str:
    """The first ``n_bytes`` UTF-8 bytes of a corpus (cut back to a character boundary)."""
    from yoco_eval.nll.corpora import corpus_parts

    _, _, parts = corpus_parts(corpus)
    buf, size = [], 0
    for part in parts:
        buf.append(part.text)
        size += len(part.text.encode())
        if size >= n_bytes:
            break
    return "".join(buf).encode()[:n_bytes].decode("utf-8", "ignore")


def bucket_docs(text: str, edges: list[int] = EDGES) -> list[dict]:
    """One doc per bucket: ``context`` (text before it), ``target`` (the bucket's text), ``bucket`` (metric name).

    The buckets' targets concatenate to ``text``; no context ends with whitespace (see the module docstring)."""
    cuts, nbytes, ci = [], 0, 0
    for edge in edges:
        while ci < len(text) and (nbytes < edge or (0 < ci and text[ci - 1].isspace())):
            nbytes += len(text[ci].encode())
            ci += 1
        cuts.append(ci)
    return [
        {"context": text[:a], "target": text[a:b], "bucket": bucket_name(lo, hi)}
        for (a, b), (lo, hi) in zip(zip(cuts[:-1], cuts[1:]), zip(edges[:-1], edges[1:]))
        if b > a
    ]


def _load(corpus: str):
    import datasets

    return {"test": datasets.Dataset.from_list(bucket_docs(document_text(corpus)))}


def load_book(**_options):
    """``{"test": Dataset}`` of the book document's buckets (metadata and model_args keywords are ignored)."""
    return _load("book")


def load_code(**_options):
    """``{"test": Dataset}`` of the code document's buckets."""
    return _load("code")


def process_results(doc: dict, results) -> dict:
    """``(log-likelihood, bytes)`` pairs: one for the doc's own bucket, one for the whole-document metric."""
    ll, _greedy = results[0]
    item = (ll, len(doc["target"].encode()))
    return {doc["bucket"]: item, "bits_per_byte": item}
