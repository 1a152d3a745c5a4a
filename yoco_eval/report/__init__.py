"""HTML reports: needle-run heatmaps with drill-down, a browsable index, comparisons, lm-eval and profile pages.

Public API (each returns the written file)::

    render_run(run_dir) -> Path                      # <run_dir>/report.html
    render_index(root="reports") -> Path             # <root>/index.html (writes that one file only)
    render_run_and_index(run_dir, index_path) -> (Path, Path | None)   # what a finished sweep calls
    render_compare(run_a, run_b, out) -> Path
    render_lm_eval(results_json_paths, out) -> Path
    render_profile(profile_json, out) -> Path

The command line is ``yoco-eval report DIR`` (see :mod:`yoco_eval.report.cli`).
"""

from yoco_eval.report.index import render_all, render_index, render_run_and_index
from yoco_eval.report.render import render_compare, render_lm_eval, render_profile, render_run

__all__ = [
    "render_all",
    "render_compare",
    "render_index",
    "render_lm_eval",
    "render_profile",
    "render_run",
    "render_run_and_index",
]
