"""lm-eval shims for the needle tasks: everything lives in yoco_eval.niah.lm_eval_task."""

from yoco_eval.niah.lm_eval_task import build_docs, process_results  # noqa: F401


def niah_single(**kw):
    return build_docs("single", **kw)


def niah_gkamradt(**kw):
    return build_docs("gkamradt", **kw)


def niah_multi(**kw):
    return build_docs("multi", **kw)


def niah_multikey(**kw):
    return build_docs("multikey", **kw)


def niah_multivalue(**kw):
    return build_docs("multivalue", **kw)


def niah_multiquery(**kw):
    return build_docs("multiquery", **kw)
