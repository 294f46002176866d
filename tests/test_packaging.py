"""A regular (non-editable) install works outside the checkout: the wheel carries the top-level folders
the code reads (data/, prompts/, migrations/) and the code finds them under the install prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from dataspec.resources import checkout_root, resource_dir

REPO = Path(__file__).resolve().parent.parent


def test_in_the_checkout_the_folders_are_the_repositorys() -> None:
    assert checkout_root() == REPO
    for name in ("data", "prompts", "migrations"):
        assert resource_dir(name) == REPO / name


def test_a_wheel_installed_elsewhere_finds_its_data_prompts_and_migrations(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("crossglg-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # the project's dependencies come from the running environment (a path entry: its own .pth files,
    # among them the editable install of this checkout, are not processed)
    (site_packages / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    env = dict(os.environ, KBGEN_HOME=str(tmp_path / "home"))
    env.pop("PYTHONPATH", None)
    code = (
        "import kbgen, dataspec.resources as r;"
        "from kbgen.llm.templates import prompts_dir;"
        "from dataspec import load_spec;"
        "print(kbgen.__file__); print(r.resource_dir('migrations')); print(prompts_dir());"
        "print(len(load_spec('ntu120').classes))"
    )
    out = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0].startswith(str(site_packages))  # the installed copy, not the checkout
    assert out[1] == str(env_dir / "share" / "crossglg" / "migrations")
    assert out[2] == str(env_dir / "share" / "crossglg" / "prompts")
    assert out[3] == "120"
    kbgen = str(env_dir / "bin" / "kbgen")
    upgraded = subprocess.run([kbgen, "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "(head)" in upgraded.stdout
