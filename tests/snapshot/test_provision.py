"""The private criu installer, against Debian's real archive and apt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from thawllm.snapshot import provision
from thawllm.snapshot.provision import (
    MANIFEST_NAME,
    PrivateCriu,
    ProvisionError,
    default_prefix,
    install_private_criu,
)

VERSION_TIMEOUT_S = 30


@pytest.fixture
def may_install(privileged, missing_prerequisite):
    """Skip, or fail under CI=true, where the installer's own checks would refuse."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        missing_prerequisite("the installer needs Debian's apt-get and dpkg-deb")


def test_default_prefix_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("THAW_CRIU_PREFIX", str(tmp_path / "criu"))
    assert default_prefix() == tmp_path / "criu"

    monkeypatch.delenv("THAW_CRIU_PREFIX")
    expected = provision.ROOT_PREFIX if os.geteuid() == 0 else provision.USER_PREFIX.expanduser()
    assert default_prefix() == expected


def test_installed_prefix_runs_its_criu(private_criu):
    result = subprocess.run(
        [str(private_criu.wrapper), "--version"], capture_output=True, text=True,
        timeout=VERSION_TIMEOUT_S, check=False,
    )
    manifest = json.loads((private_criu.prefix / MANIFEST_NAME).read_text())

    assert result.returncode == 0, result.stderr
    assert f"Version: {private_criu.version}" in result.stdout
    assert any(name.startswith("criu_") for name in manifest["packages"])
    assert any(name.startswith("libc6_") for name in manifest["packages"])


def test_install_over_working_prefix_does_nothing(private_criu, may_install):
    manifest = private_criu.prefix / MANIFEST_NAME
    modified_before = manifest.stat().st_mtime_ns
    lines: list[str] = []

    assert install_private_criu(private_criu.prefix, progress=lines.append) == private_criu.prefix

    expected = f"criu {private_criu.version} is already installed in {private_criu.prefix}; nothing to do."
    assert lines == [expected]
    assert manifest.stat().st_mtime_ns == modified_before


def test_install_into_new_prefix(tmp_path, may_install):
    prefix = tmp_path / "criu"
    lines: list[str] = []

    assert install_private_criu(prefix, progress=lines.append) == prefix

    installed = PrivateCriu.load(prefix)
    assert installed is not None
    assert installed.version
    assert str(prefix) in installed.wrapper.read_text()
    assert list(tmp_path.iterdir()) == [prefix], "no staging directory is left"
    assert lines[-1].startswith(f"Installed criu {installed.version} in {prefix}")


def test_failed_install_leaves_nothing(tmp_path, monkeypatch, may_install):
    monkeypatch.setattr(provision, "CRIU_PACKAGE", "thaw-no-such-package")

    with pytest.raises(ProvisionError, match="thaw-no-such-package"):
        install_private_criu(tmp_path / "criu", progress=lambda line: None)

    assert list(tmp_path.iterdir()) == []


def test_install_without_apt_names_the_missing_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ProvisionError, match="apt-get, dpkg, dpkg-deb"):
        install_private_criu(tmp_path / "criu", progress=lambda line: None)


def test_debian_mirror_is_a_url():
    assert provision.debian_mirror().startswith(("http://", "https://"))
