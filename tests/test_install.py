"""The wheel, installed outside the repository, runs the demo with the anchor it ships.

Cost: about 40 s on a 2-core CPU (building the wheel ~5 s, `minigrpo demo --small` ~30 s), marked
``slow``. Nothing is downloaded: the wheel is built without build isolation, installed with --no-deps
--no-index into a fresh venv, and that venv borrows this venv's dependencies (torch, transformers, ...)
through a .pth line. The .pth line adds the directory only; the .pth files inside it are not run, so this
checkout's editable install of minigrpo does not leak in (test_installed_package_is_the_wheel checks).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600                                   # seconds per subprocess: CI machines are shared and slow
# the files every installed copy must have to run the demo without rebuilding anything
SHIPPED = ["minigrpo/assets/anchors/addition/model.safetensors", "minigrpo/assets/anchors/addition/config.json",
           "minigrpo/assets/anchors/addition/tokenizer.json", "minigrpo/assets/anchors/chain/model.safetensors",
           "minigrpo/assets/reward_models/addition-column-checker/model.safetensors"]

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (f"`{' '.join(map(str, cmd))}` exited {proc.returncode} in {cwd}\n"
                                  f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}")
    return proc


def package_files(root: Path) -> set[str]:
    """Files under ``root``/minigrpo, relative to ``root``, without bytecode caches."""
    return {p.relative_to(root).as_posix() for p in (root / "minigrpo").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel from a copy of this checkout and install it into a fresh venv. Returns
    (wheel, the venv, the copied source tree, the environment to run the venv's programs with)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"                           # a copy, so the build writes no build/ or egg-info here
    shutil.copytree(ROOT / "minigrpo", src / "minigrpo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("minigrpo-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    run(pip + ["--python", python, "install", "--no-deps", "--no-index", wheel], cwd=tmp)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1")
    return wheel, venv, src, env


def test_wheel_contains_every_package_file_and_the_shipped_assets(installed):
    wheel, _, src, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in SHIPPED if f not in names], f"{wheel.name} lacks shipped assets: {SHIPPED} vs {sorted(names)}"
    missing = sorted(package_files(src) - names)
    assert not missing, f"{wheel.name} lacks files of the package (widen [tool.setuptools.package-data]): {missing}"


def test_installed_package_is_the_wheel_not_this_checkout(installed, tmp_path):
    _, venv, _, env = installed
    code = ("import json, minigrpo; from minigrpo.assets import asset_path; "
            "print(json.dumps([minigrpo.__file__, str(asset_path('anchors', 'addition'))]))")
    out = run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=env).stdout.strip().splitlines()[-1]
    for path in map(Path, json.loads(out)):
        assert path.resolve().is_relative_to(venv.resolve()), f"{path} is not inside the new venv {venv}"
        assert not path.resolve().is_relative_to(ROOT), f"{path} comes from this checkout, not the wheel"


@pytest.mark.smoke
def test_installed_wheel_runs_the_demo_in_an_empty_folder_with_the_shipped_anchor(installed, tmp_path):
    """`minigrpo demo --small` from an empty folder: exit 0, the run folder lands in that folder (the default
    --out is runs/ under the working directory), no anchor is rebuilt by SFT, the installed package is
    not written to."""
    _, venv, _, env = installed
    pkg = Path(run([venv / "bin" / "python", "-c", "import minigrpo, os; print(os.path.dirname(minigrpo.__file__))"],
                   cwd=tmp_path, env=env).stdout.strip().splitlines()[-1])
    before = package_files(pkg.parent)
    work = tmp_path / "work"
    work.mkdir()
    run([venv / "bin" / "minigrpo", "demo", "--small"], cwd=work, env=env)

    (run_dir,) = (work / "runs").glob("demo-*")
    for name in ("summary.json", "report.md", "lm/metrics.jsonl", "bandit/summary.json"):
        assert (run_dir / name).is_file(), f"the demo did not write {name} into {run_dir}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["anchor_accuracy"] <= 1.0 and 0.0 <= summary["final_accuracy"] <= 1.0
    rebuilt = [p for p in work.rglob("anchors") if p.is_dir()]
    assert not rebuilt, f"the demo rebuilt an anchor by SFT instead of using the shipped one: {rebuilt}"
    assert package_files(pkg.parent) == before, "the demo wrote into the installed package"
