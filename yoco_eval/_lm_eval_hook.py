"""Start-up hook that makes the plain ``lm_eval --model yoco`` command find our adapter (lm-eval 0.4.13).

lm-eval 0.4.13 does not read the ``lm_eval.models`` entry points, so the wheel installs ``yoco_eval_lm_eval.pth``
at the root of site-packages; Python runs its one line (``import yoco_eval._lm_eval_hook``) at every start-up.

To keep that start-up cost near zero, nothing is imported here: a one-shot import watcher waits until
``lm_eval.models`` has been imported (lm-eval's built-in models are registered first, so ``--model hf`` keeps
working) and then registers ``yoco`` and ``yoco-eval`` as lazy ``"module:Class"`` placeholders. The adapter
module (torch, the model code) is imported only when ``--model yoco`` is actually resolved. Every step is
wrapped so that a failure here can never break an unrelated Python process.
"""

from __future__ import annotations

import sys

TARGET = "yoco_eval.lm_eval_adapter:YOCOLM"
NAMES = ("yoco", "yoco-eval")
_WATCHED = "lm_eval.models"
_TOP = "lm_eval"  # once lm-eval itself is imported: an unknown task name is shown as one line (see below)


def register() -> bool:
    """Register the placeholders now (imports ``lm_eval.models`` first). Returns False when it could not."""
    try:
        import lm_eval.models  # noqa: F401  (built-ins first: see the registry gotcha in lm_eval.api.registry)
        from lm_eval.api.registry import model_registry

        for name in NAMES:
            if name not in model_registry:
                model_registry.register(name, target=TARGET)
        return True
    except Exception:
        return False


def one_line_unknown_tasks() -> None:
    """lm-eval raises ``ValueError("Tasks not found: ...")`` for a task name it does not know, before any model is
    built. Uncaught, it is shown as one line naming how to list the tasks instead of a traceback (exit status 1);
    every other exception keeps its normal traceback."""
    previous = sys.excepthook
    if getattr(previous, "_yoco_eval_tasks", False):
        return

    def hook(kind, value, tb):
        if kind is ValueError and str(value).startswith("Tasks not found"):
            names = str(value).split(":", 1)[-1].strip()
            print(f"error: unknown task(s) {names}: list the tasks with `lm-eval ls tasks` (with --include_path DIR "
                  "for a folder of task files)", file=sys.stderr)  # fmt: skip
            return
        previous(kind, value, tb)

    hook._yoco_eval_tasks = True
    sys.excepthook = hook


class _RegisterAfterExec:
    """Loader wrapper: runs the real loader, puts it back on the module, then calls ``then`` (default: register)."""

    def __init__(self, inner, then=None):
        self.inner = inner
        self.then = then or register

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        try:
            self.inner.exec_module(module)
        finally:
            module.__loader__ = self.inner
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.inner
        try:
            self.then()
        except Exception:
            pass


class _Watcher:
    """A meta-path finder that only reacts to one module (``lm_eval.models`` unless told otherwise) and removes
    itself on first use."""

    def __init__(self, watched: str = _WATCHED, then=None):
        self.watched, self.then = watched, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.watched:
            return None
        try:
            sys.meta_path.remove(self)
            from importlib.machinery import PathFinder

            spec = PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return None
            spec.loader = _RegisterAfterExec(spec.loader, self.then)
            return spec
        except Exception:
            return None


def install() -> None:
    try:
        if _WATCHED in sys.modules:
            register()
        elif not any(isinstance(f, _Watcher) and f.watched == _WATCHED for f in sys.meta_path):
            sys.meta_path.insert(0, _Watcher())
        if _TOP in sys.modules:
            one_line_unknown_tasks()
        elif not any(isinstance(f, _Watcher) and f.watched == _TOP for f in sys.meta_path):
            sys.meta_path.insert(0, _Watcher(_TOP, one_line_unknown_tasks))
    except Exception:
        pass


install()
