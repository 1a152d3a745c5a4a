"""custom_dataset generator for yoco_gen_arith: seeded two-number additions (no data file needed)."""

import random


def load(n_problems: int = 50, arith_seed: int = 1234, max_operand: int = 20, **_options):
    """Return ``{"test": Dataset}`` of ``n_problems`` additions ``a + b`` with operands in ``[0, max_operand]``.

    lm-eval also passes metadata and model_args as keywords; they are ignored."""
    import datasets

    rng = random.Random(int(arith_seed))
    rows = []
    for i in range(int(n_problems)):
        a, b = rng.randint(0, int(max_operand)), rng.randint(0, int(max_operand))
        rows.append({"id": i, "a": a, "b": b, "answer": str(a + b)})
    return {"test": datasets.Dataset.from_list(rows)}
