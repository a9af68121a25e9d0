"""inferq installs as one import name beside a project of the user's own that has a `config`
module and an `api` package, from a wheel built out of exactly what compose/Dockerfile copies
into its image; and the README's Python API example runs as written from that install."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fabric import running
from tests.support.fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
model_list:
  - model_name: local-model
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      max_parallel_requests: 4
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""


def _image_context(dest: Path) -> Path:
    """What the Dockerfile's COPY lines put in the image's /app (links kept as links)."""
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        *sources, target = words[1:]
        for source in sources:
            src = ROOT / source
            out = dest / target / src.name if target.endswith("/") else dest / target
            if src.is_dir():
                shutil.copytree(
                    src, out, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """inferq's wheel, built (as the image's `pip install .` builds it) from the image's files."""
    tmp = tmp_path_factory.mktemp("wheel")
    context = _image_context(tmp / "app")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp), "."],
        cwd=context,
        check=True,
        timeout=240,
    )
    (built,) = tmp.glob("inferq-*.whl")
    return built


def test_the_wheel_holds_one_package_with_every_layer_and_its_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "inferq",
        wheel.name.split("-")[0] + "-0.1.0.dist-info",
    }
    for path in [
        "inferq/__init__.py",
        "inferq/py.typed",
        "inferq/api/app.py",
        "inferq/api/ops/ui.html",
        "inferq/broker/batch/submit.py",
        "inferq/config/minimal_config.yaml",
        "inferq/workers/providers/openai.py",
        "inferq/cli/__main__.py",
    ]:
        assert path in names


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with nothing but the wheel and its declared dependencies."""
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=400,
    )
    yield where


def _user_project(where: Path) -> Path:
    """A project with modules named like inferq's layers: `config.py` and an `api` package."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "config.py").write_text("WHOSE = 'the user'\n")
    (where / "api").mkdir(exist_ok=True)
    (where / "api" / "__init__.py").write_text("WHOSE = 'the user'\n")
    return where


@pytest.mark.timeout(600)
def test_a_fresh_virtualenv_holds_only_inferq_and_imports_it_beside_the_users_own(
    venv: Path, tmp_path: Path
) -> None:
    site = next((venv / "lib").glob("python3*/site-packages"))
    for layer in ("api", "broker", "config", "workers"):
        assert not (site / layer).exists(), f"{layer} installed at the top of site-packages"
    project = _user_project(tmp_path / "project")
    script = (
        "import config, api, inferq\n"
        "from inferq.config.runtime import DEFAULT_CONFIG\n"
        "assert config.WHOSE == api.WHOSE == 'the user', (config, api)\n"
        "loaded = inferq.load_config(DEFAULT_CONFIG)\n"
        "import inferq.api.app, inferq.workers.main\n"
        "print(sorted(loaded.groups)[0], inferq.api.app.create_app.__module__)\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "inferq.api.app"
    check = subprocess.run(
        [str(venv / "bin" / "inferq"), "config", "check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return blocks[0]


@pytest.mark.timeout(600)
def test_the_readmes_python_example_runs_from_the_fresh_install(
    venv: Path, tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    project = _user_project(tmp_path / "project")
    (project / "example.py").write_text(_readme_example())
    with running(CONFIG, redis_url, tmp_path, api_base=backend.api_base, prefix=prefix) as fabric:
        (project / "config.yaml").write_text(fabric.config.read_text())
        done = subprocess.run(
            [str(venv / "bin" / "python"), "example.py"],
            cwd=project,
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    answers = sorted(line for line in lines if line.startswith("q"))
    assert [a.split()[:2] for a in answers] == [["q0", "200"], ["q1", "200"], ["q2", "200"]]
    assert "succeeded=3" in lines[-1] and "failed=0" in lines[-1]
    assert len(backend.requests) == 3
