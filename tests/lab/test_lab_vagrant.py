"""The lab VM's files: the provisioning script (bash -n, shellcheck) and the Vagrantfile (ruby -c,
vagrant validate --ignore-provider, with and without a mirrored box); and the ``dev`` and ``.ci/run``
scripts (shellcheck). No VM and no hypervisor needed; each check is skipped, with the reason, only when its
tool is not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from lab_helpers import REPO

PROVISION = REPO / "lab" / "provision.sh"
VAGRANTFILE = REPO / "Vagrantfile"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def test_provision_script_parses() -> None:
    subprocess.run(["bash", "-n", str(PROVISION)], check=True)


def test_provision_script_passes_shellcheck() -> None:
    done = subprocess.run([need("shellcheck"), str(PROVISION)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_provision_script_refuses_an_unknown_step() -> None:
    done = subprocess.run(["bash", str(PROVISION), "bogus"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (64, "usage: provision.sh install | example\n")


@pytest.mark.parametrize("script", ["dev", ".ci/run"])
def test_dev_scripts_pass_shellcheck(script: str) -> None:
    done = subprocess.run([need("shellcheck"), str(REPO / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_dev_refuses_an_unknown_step() -> None:
    done = subprocess.run([str(REPO / "dev"), "bogus"], capture_output=True, text=True, check=False)
    assert done.returncode == 64 and done.stderr.endswith("usage: ./dev example | test [pytest args] | setup\n")


def test_vagrantfile_is_ruby() -> None:
    done = subprocess.run([need("ruby"), "-c", str(VAGRANTFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr


def test_the_box_is_pinned_and_can_come_from_a_mirror() -> None:
    text = VAGRANTFILE.read_text()
    assert re.search(r'^NETSIM_BOX_VERSION = "\d+\.\d{8}\.\d+"', text, re.M)
    assert "config.vm.box_version = NETSIM_BOX_VERSION" in text
    assert 'ENV.fetch("NETSIM_BOX_URL"' in text and "config.vm.box_url = box_url" in text
    assert 'path: "lab/provision.sh"' in text


@pytest.mark.parametrize("mirror", [None, "file:///srv/boxes/debian-bookworm64.box"])
def test_vagrant_validates_the_vagrantfile(mirror: str | None, tmp_path: Path) -> None:
    vagrant = need("vagrant")
    env = {**os.environ, "VAGRANT_CWD": str(REPO), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    env.pop("NETSIM_BOX_URL", None)
    if mirror is not None:
        env.update(NETSIM_BOX_URL=mirror, NETSIM_BOX_SHA256="0" * 64)
    done = subprocess.run([vagrant, "validate", "--ignore-provider"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout
