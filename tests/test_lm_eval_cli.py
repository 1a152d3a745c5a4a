"""End to end: the real ``lm_eval`` console script, the Python API, ``yoco-eval lm-eval``, torchrun data parallel,
and what the wheel ships (the ``.pth`` hook and the whole ``tasks/`` tree).

The model is ``yoco-debug`` with random weights saved as a checkpoint folder (byte tokenizer), so the metric
values are meaningless; what is checked is that every path runs offline and that they agree with each other.
"""

from __future__ import annotations

import glob
import importlib.metadata as md
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["yoco_mc_facts", "yoco_ppl_shakespeare", "yoco_gen_arith"]
METRICS = ["acc,none", "acc_norm,none", "word_perplexity,none", "bits_per_byte,none", "exact_match,none"]
RUNS: dict[str, dict] = {}


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def _metrics(results: dict) -> dict[str, float]:
    out = {}
    for task in TASKS:
        for m in METRICS:
            if m in results[task]:
                out[f"{task}/{m}"] = float(results[task][m])
    return out


def _read_results(out_dir: Path) -> dict:
    found = glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True)
    assert len(found) == 1, f"expected one results file under {out_dir}, found {found}"
    return json.loads(Path(found[0]).read_text())


def _run(cmd: list[str], cwd: Path, timeout: int = 400, **env) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from yoco_eval.config import get_config
    from yoco_eval.model.checkpoint import build_model, init_weights, save_model

    return save_model(init_weights(build_model(get_config("yoco-debug"))), tmp_path_factory.mktemp("ckpt") / "tiny")


def _common_args(checkpoint: Path) -> list[str]:
    return ["--model", "yoco", "--model_args", f"pretrained={checkpoint},max_length=256", "--tasks", ",".join(TASKS),
            "--limit", "4", "--batch_size", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def lm_eval_command(tmp_path_factory) -> list[str]:
    """How to start the real ``lm_eval`` console script in an environment where yoco-eval is pip-installed.

    Where this interpreter has yoco-eval installed (CI: ``pip install -e ".[test]"``), that is the script next to
    it. Otherwise (a bare checkout) the project is ``pip install -e``'d into a throwaway venv layered over this
    one, and lm-eval's own console script is run by that venv's interpreter.
    """
    script = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    assert script, "lm-eval's console script is missing next to the interpreter"
    try:
        files = md.distribution("yoco-eval").files or []
    except md.PackageNotFoundError:
        files = None
    if files is not None:
        assert any(str(f) == "yoco_eval_lm_eval.pth" for f in files), "the install did not put the .pth hook in place"
        return [script]
    venv = tmp_path_factory.mktemp("overlay") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    parents = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "_base_env.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "-e", str(ROOT)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot pip install the project into a throwaway venv here: {done.stderr.strip()[-300:]}")
    assert Path(purelib, "yoco_eval_lm_eval.pth").is_file(), "pip install -e did not install the .pth hook"
    return [str(python), script]


def test_console_script_runs_local_tasks_and_writes_results(lm_eval_command, checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    # no --device: the CLI's default cuda:0 falls back to the CPU when there is no GPU
    cmd = [*lm_eval_command, *_common_args(checkpoint), "--include_path", str(ROOT / "tasks"),
           "--output_path", str(out_dir)]  # fmt: skip
    done = _run(cmd, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    res = _read_results(out_dir)
    assert res["config"]["model"] == "yoco" and res["config"]["yoco_arch"] == "YOCO"
    assert all(res["n-samples"][t]["effective"] == 4 for t in TASKS)
    RUNS["cli"] = _metrics(res["results"])
    assert len(RUNS["cli"]) == len(METRICS)


def test_console_script_reports_an_unknown_task_in_one_line(lm_eval_command, tmp_path):
    cmd = [*lm_eval_command, "--model", "yoco", "--model_args", "pretrained=yoco-needle-7m", "--tasks", "no_such_task",
           "--device", "cpu"]  # fmt: skip
    done = _run(cmd, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown task(s) no_such_task: list the tasks with `lm-eval ls tasks`"), last
    assert not any(tmp_path.iterdir())  # nothing written


def test_python_api_gives_the_same_metrics(checkpoint):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import yoco_eval.lm_eval_adapter  # noqa: F401  (registers "yoco" in this process)

    tm = TaskManager(include_path=str(ROOT / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(model="yoco", model_args=f"pretrained={checkpoint},max_length=256", tasks=TASKS,
                                  task_manager=tm, limit=4, batch_size=2, device="cpu", bootstrap_iters=0)  # fmt: skip
    RUNS["api"] = _metrics(res["results"])
    if "cli" not in RUNS:
        pytest.skip("the console-script run did not complete")
    assert RUNS["api"] == pytest.approx(RUNS["cli"], rel=1e-6)


def test_torchrun_two_processes_match_one(checkpoint, tmp_path):
    out_dir = tmp_path / "dp"
    # yoco_eval.lm_eval_cli adds --include_path <tasks> itself
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "yoco_eval.lm_eval_cli",
        *_common_args(checkpoint),
        "--device",
        "cpu",
        "--output_path",
        str(out_dir),
        "--verbosity",
        "INFO",
    ]
    done = _run(cmd, cwd=ROOT, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on rank 1" in done.stderr  # lm-eval really sharded the documents over two ranks
    res = _read_results(out_dir)
    got = _metrics(res["results"])
    ref = RUNS.get("api") or RUNS.get("cli")
    if ref is None:
        pytest.skip("no single-process run to compare with")
    assert got == pytest.approx(ref, rel=1e-5)
    assert all(res["n-samples"][t]["effective"] == 4 for t in TASKS)


def test_wrapper_reports_bad_input_in_one_line(tmp_path):
    # `yoco-eval lm-eval ...` (the subcommand hands over to yoco_eval.lm_eval_cli.main)
    cmd = [sys.executable, "-m", "yoco_eval.cli", "lm-eval", "--model", "yoco", "--model_args",
           "pretrained=/nonexistent/ckpt", "--tasks", "yoco_mc_facts", "--device", "cpu"]  # fmt: skip
    done = _run(cmd, cwd=ROOT, PYTHONPATH=str(ROOT))
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("yoco-eval lm-eval: error: checkpoint '/nonexistent/ckpt' not found"), last


def test_wrapper_reports_an_unknown_task_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "yoco_eval.cli", "lm-eval", "--model", "yoco", "--model_args",
           "pretrained=yoco-needle-7m", "--tasks", "no_such_task", "--device", "cpu"]  # fmt: skip
    done = _run(cmd, cwd=tmp_path, PYTHONPATH=str(ROOT))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("yoco-eval lm-eval: error: unknown task(s) no_such_task:"), last
    assert not any(tmp_path.iterdir())  # nothing written


def test_wrapper_adds_the_task_folder_only_when_none_is_given():
    from yoco_eval.lm_eval_cli import _with_default_include_path, tasks_dir

    assert tasks_dir() == ROOT / "tasks"
    assert _with_default_include_path(["--tasks", "x"]) == ["--tasks", "x", "--include_path", str(ROOT / "tasks")]
    assert _with_default_include_path(["--include_path", "mine"]) == ["--include_path", "mine"]
    assert _with_default_include_path(["--include_path=mine"]) == ["--include_path=mine"]
    assert _with_default_include_path(["--config", "c.yaml"]) == ["--config", "c.yaml"]
    assert _with_default_include_path(["--help"]) == ["--help"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot build the wheel here: {done.stderr.strip()[-300:]}")
    (path,) = out.glob("yoco_eval-*.whl")
    return path


def test_wheel_ships_the_hook_the_entry_point_and_every_task_file(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("yoco_eval_lm_eval.pth").decode().strip() == "import yoco_eval._lm_eval_hook"
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[lm_eval.models]" in entry_points and "yoco = yoco_eval.lm_eval_adapter:YOCOLM" in entry_points
    task_files = [p.relative_to(ROOT / "tasks").as_posix() for p in (ROOT / "tasks").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts]  # fmt: skip
    assert task_files and all(f"yoco_eval/_tasks/{f}" in names for f in task_files)


def test_tasks_load_from_the_installed_wheel_location(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
    code = (
        "from yoco_eval.lm_eval_cli import tasks_dir\n"
        "from lm_eval.tasks import TaskManager\n"
        "d = tasks_dir(); assert d.parts[-2:] == ('yoco_eval', '_tasks'), d\n"
        "tm = TaskManager(include_path=str(d), include_defaults=False)\n"
        "t = tm.load(['yoco_mc_facts', 'yoco_ppl_shakespeare', 'yoco_gen_arith'])['tasks']\n"
        "print(sorted((k, len(v.eval_docs)) for k, v in t.items()))\n"
    )
    done = _run([sys.executable, "-c", code], cwd=tmp_path, PYTHONPATH=str(tmp_path / "site"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "('yoco_gen_arith', 50), ('yoco_mc_facts', 40), ('yoco_ppl_shakespeare', 12)" in done.stdout


def test_wheel_ships_the_models_and_loads_them_by_name_from_any_directory(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    shipped = [p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*") if p.is_file()]
    assert "yoco-needle-7m/model.safetensors" in shipped and all(f"yoco_eval/_models/{f}" in names for f in shipped)
    code = (
        "from yoco_eval.loading import LoadSpec\n"
        "for name in ('yoco-needle-7m', 'models/transformer-needle-7m'):\n"
        "    engine = LoadSpec(name, device='cpu').load_engine()\n"
        "    print(engine.path)\n"
    )
    done = _run([sys.executable, "-c", code], cwd=tmp_path, PYTHONPATH=str(tmp_path / "site"))
    assert done.returncode == 0, done.stderr[-2000:]
    site = (tmp_path / "site" / "yoco_eval" / "_models").resolve()
    assert done.stdout.split() == [str(site / "yoco-needle-7m"), str(site / "transformer-needle-7m")]


def test_offline_overrides_of_standard_tasks(tmp_path, fixtures):
    """The two `dataset_path: json` recipes of tasks/README.md: arc_easy and hellaswag from local JSONL files."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from yoco_eval.lm_eval_adapter import YOCOLM

    data = fixtures / "lm_eval"
    (tmp_path / "arc_easy.yaml").write_text(
        "task: arc_easy\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data / 'arc_easy_sample.jsonl'}\n"
        "output_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{choices.label.index(answerKey)}}"\ndoc_to_choice: "{{choices.text}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n"
    )
    (tmp_path / "hellaswag.yaml").write_text(
        "task: hellaswag\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data / 'hellaswag_sample.jsonl'}\n"
        "output_type: multiple_choice\nvalidation_split: validation\n"
        "process_docs: !function lm_eval.tasks.hellaswag.utils.process_docs\n"
        'doc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "choices"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    lm = YOCOLM(pretrained="yoco-debug", max_length=256, device="cpu", batch_size=4)
    res = lm_eval.simple_evaluate(model=lm, tasks=["arc_easy", "hellaswag"], task_manager=tm, bootstrap_iters=0)
    assert res["n-samples"]["arc_easy"]["effective"] == 3 and res["n-samples"]["hellaswag"]["effective"] == 2
    assert 0.0 <= res["results"]["hellaswag"]["acc,none"] <= 1.0
    docs = tm.load(["hellaswag"])["tasks"]["hellaswag"].eval_docs
    assert docs[1]["query"].startswith("Washing a car. Rinse the car.: A woman")  # process_docs ran
