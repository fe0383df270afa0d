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


# A stand-in for ./dev: reports where it runs and what lies beside it, then exits with status 3.
FAKE_DEV = """#!/usr/bin/env bash
set -eu
echo "args=$*"
echo "here=$(pwd)"
echo "mode=$(stat -c %a ..)"
echo "shared=$(cat ../shared/marker)"
echo "committed=$(cat committed.txt)"
test -e uncommitted.txt && echo "uncommitted=yes"
exit 3
"""


def test_ci_run_tests_a_clone_of_head_in_a_private_directory_with_shared_beside_it(tmp_path: Path) -> None:
    checkout = tmp_path / "repo"
    (checkout / ".ci").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "marker").write_text("the shared folder\n")
    (checkout / ".ci" / "run").write_text((REPO / ".ci" / "run").read_text())
    (checkout / "dev").write_text(FAKE_DEV)
    for script in (checkout / ".ci" / "run", checkout / "dev"):
        script.chmod(0o755)
    (checkout / "committed.txt").write_text("v1\n")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    (checkout / "committed.txt").write_text("v2, not committed\n")  # the committed HEAD is what is tested
    (checkout / "uncommitted.txt").write_text("x\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([str(checkout / ".ci" / "run"), "-k", "x"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 3, done.stdout + done.stderr  # ./dev test's own status
    report = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert report["args"] == "test -k x"
    assert Path(report["here"]).parent.parent == tmp_path and Path(report["here"]).name == "netsim"
    assert report["mode"] == "700" and report["shared"] == "the shared folder"
    assert report["committed"] == "v1" and "uncommitted" not in report
    assert "uncommitted changes are not part of it" in done.stderr
    assert not Path(report["here"]).exists()  # the private clone is removed afterwards
