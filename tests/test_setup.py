"""Set-up (issue 15): `make demo` installs only what colouring needs, `make test` the rest; apt waits for another
apt instead of failing; the package builds without setuptools warnings and ships the page's files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_ONLY = {"chromium", "nginx-light", "nginx", "jax", "jaxlib", "playwright", "pytest", "fastapi", "uvicorn",
             "httpx", "hypothesis", "nbmake", "dask", "supervisor"}


def _dry_run(target: str) -> str:
    if not shutil.which("make"):
        pytest.skip("needs make")
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _requirement_names(file: Path) -> set[str]:
    names = set()
    for line in file.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= _requirement_names(file.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[=<>;\[ ]", line)[0].lower())
    return names


def _installs(plan: str) -> tuple[set[str], set[str]]:
    """(system packages, Python packages) that a `make -n` plan installs."""
    system, python = set(), set()
    for line in plan.splitlines():
        if "install-system-packages.sh" in line:
            system |= set(line.split("install-system-packages.sh", 1)[1].split())
        elif "apt-get" in line:  # an install written out in the Makefile itself
            system |= set(re.findall(r"for package in ([^;]*);", line)[0].split()) if "for package in" in line else set()
        for file in re.findall(r"pip install .*-r (\S+)", line):
            python |= _requirement_names(ROOT / file)
    return system, python


def test_make_demo_installs_only_what_colouring_needs():
    system, python = _installs(_dry_run("demo"))
    assert {"imagemagick", "libmagickwand-dev", "libjpeg-turbo-progs"} <= system
    assert {"keras", "numpy", "wand", "pillow"} <= python
    assert not system & TEST_ONLY and not python & TEST_ONLY, (system & TEST_ONLY, python & TEST_ONLY)


def test_make_test_installs_the_rest():
    system, python = _installs(_dry_run("test"))
    assert {"imagemagick", "libjpeg-turbo-progs", "chromium", "nginx-light"} <= system
    assert {"keras", "jax", "playwright", "pytest", "fastapi", "uvicorn", "httpx", "dask", "supervisor"} <= python


def test_make_benchmarks_installs_what_the_benchmarks_import():
    _, python = _installs(_dry_run("benchmarks"))
    assert {"keras", "httpx", "pytest", "psutil"} <= python


def _fake_commands(folder: Path, log: Path) -> None:
    """apt-get that records its arguments and finds the package lists locked on its first `update`; dpkg that
    knows no package; sudo that just runs the command."""
    folder.mkdir()
    scripts = {
        "apt-get": f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *update*)
    if [ ! -e {log}.locked-once ]; then
      touch {log}.locked-once
      echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
      exit 100
    fi ;;
esac
exit 0
""",
        "dpkg": "#!/bin/sh\nexit 1\n",
        "sudo": '#!/bin/sh\nexec "$@"\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)


def test_apt_waits_for_another_apt_instead_of_failing(tmp_path):
    log = tmp_path / "apt-get.log"
    _fake_commands(tmp_path / "bin", log)
    environment = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PYTHON": sys.executable,
                   "APT_LOCK_POLL": "0.1"}
    result = subprocess.run(["sh", str(ROOT / "scripts" / "install-system-packages.sh"), "imagemagick",
                             "libjpeg-turbo-progs"], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for it" in result.stdout
    calls = log.read_text().splitlines()
    assert [call.split()[-1] if "update" in call else "install" for call in calls] == ["-qq", "-qq", "install"]
    assert all("-o DPkg::Lock::Timeout=600" in call for call in calls), calls  # install waits for dpkg's lock
    assert calls[-1].endswith("--no-install-recommends imagemagick libjpeg-turbo-progs")


def test_apt_gives_up_on_other_errors_at_once(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "apt-get").write_text("#!/bin/sh\necho 'E: Failed to fetch http://deb.debian.org' >&2\n"
                                              "exit 100\n")
    (tmp_path / "bin" / "dpkg").write_text("#!/bin/sh\nexit 1\n")
    for name in ("apt-get", "dpkg"):
        (tmp_path / "bin" / name).chmod(0o755)
    environment = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PYTHON": sys.executable}
    result = subprocess.run(["sh", str(ROOT / "scripts" / "install-system-packages.sh"), "imagemagick"],
                            env=environment, capture_output=True, text=True, timeout=20)
    assert result.returncode == 1 and "Failed to fetch" in result.stderr


def test_every_data_folder_in_the_package_is_listed():
    """Subpackages (koala/service) must be listed too; setuptools ships their modules without package-data."""
    tomllib = pytest.importorskip("tomllib")

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(settings["packages"])
    for folder in (ROOT / "koala").rglob("*"):
        if folder.is_dir() and "__pycache__" not in folder.parts:
            name = ".".join(folder.relative_to(ROOT).parts)
            assert name in packages, f"{name} is not in [tool.setuptools] packages: setuptools warns on install"
            if (folder / "__init__.py").is_file():
                continue
            patterns = settings["package-data"][name]
            for file in folder.iterdir():
                assert any(file.match(pattern) for pattern in patterns), f"{file.name} would be left out"


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_ships_the_page(tmp_path):
    """Built with the setuptools installed here (no network), when it is one that pyproject.toml allows."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"pyproject.toml needs setuptools >= 77 (SPDX licence); this environment has {setuptools.__version__}")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "data", "models", "runs", "output", "notebooks", "benchmarks", "build", "*.egg-info",
        "__pycache__", ".pytest_cache"))
    result = subprocess.run(
        [sys.executable, "-W", "always", "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "absent from the `packages` configuration" not in output
    assert "Installing 'koala.static' as data is deprecated" not in output
    wheel = next((tmp_path / "wheel").glob("koala_colorizer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for file in (ROOT / "koala" / "static").iterdir():
        assert f"koala/static/{file.name}" in names
    for file in (ROOT / "koala" / "service").glob("*.py"):
        assert f"koala/service/{file.name}" in names


def test_serve_without_the_service_packages_says_what_to_install(tiny_model_dir):
    program = ("import sys; sys.modules['uvicorn'] = None; from koala.cli import main; "
               f"sys.exit(main(['serve', '--model', {str(tiny_model_dir)!r}]))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ("error: koala serve needs the web service's packages (uvicorn is not installed): "
                                     "pip install -r requirements-serve.txt")
