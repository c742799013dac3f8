"""Install a private criu from Debian's archive into a prefix of its own, never into /usr.

Debian 12 ships criu 3.17, which fails on Linux 6.13 and later. Debian 13
(trixie) ships criu 4.1.1. apt downloads trixie's criu with its whole library
closure, trixie's glibc included, into a private state directory, and the
packages are unpacked under the prefix. criu then runs through the prefix's
own dynamic loader, so nothing on the host changes.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thawllm.snapshot.criu import CriuNotFound, privilege_problem, read_version

log = logging.getLogger("thaw.snapshot")

PREFIX_ENV = "THAW_CRIU_PREFIX"
ROOT_PREFIX = Path("/var/lib/thaw/criu")
USER_PREFIX = Path("~/.local/share/thaw/criu")

CRIU_PACKAGE = "criu"
CRIU_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MANIFEST_NAME = "thaw-criu.json"

APT_UPDATE_TIMEOUT_S = 600.0
APT_DOWNLOAD_TIMEOUT_S = 900.0
UNPACK_TIMEOUT_S = 120.0
ERROR_OUTPUT_LINES = 15

# Debian architecture -> (multiarch directory, file name of glibc's dynamic loader).
# NOTE: only amd64 has been installed and run; the arm64 row follows Debian's layout.
LOADERS = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}

_OS_RELEASE = Path("/etc/os-release")
_APT_SOURCES = Path("/etc/apt/sources.list")
_APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")

Progress = Callable[[str], None]


class ProvisionError(Exception):
    """The private criu could not be installed. The message names the cause and the fix."""


def default_prefix() -> Path:
    """Return $THAW_CRIU_PREFIX, else /var/lib/thaw/criu for root, else ~/.local/share/thaw/criu."""
    configured = os.environ.get(PREFIX_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    if os.geteuid() == 0:
        return ROOT_PREFIX
    return USER_PREFIX.expanduser()


@dataclass(frozen=True)
class PrivateCriu:
    """The layout of a private criu installed under `prefix`."""

    prefix: Path
    architecture: str
    version: str
    loader_relative: str

    @classmethod
    def load(cls, prefix: Path) -> PrivateCriu | None:
        """Return the installation in `prefix`, or None when it is missing or incomplete."""
        try:
            manifest = json.loads((prefix / MANIFEST_NAME).read_text())
            architecture = manifest["architecture"]
            loader = _find_loader(prefix, architecture)
            installed = cls(prefix, architecture, manifest["criu_version"], loader)
        except (OSError, ValueError, KeyError, TypeError, ProvisionError):
            return None
        return installed if installed.criu_binary.is_file() else None

    @property
    def criu_binary(self) -> Path:
        return self.prefix / "usr/sbin/criu"

    @property
    def loader(self) -> Path:
        return self.prefix / self.loader_relative

    @property
    def library_path(self) -> str:
        multiarch, _ = LOADERS[self.architecture]
        return f"{self.prefix}/usr/lib/{multiarch}:{self.prefix}/lib/{multiarch}"

    @property
    def wrapper(self) -> Path:
        return self.prefix / "bin/criu"

    def command(self) -> list[str]:
        """Return the argv prefix that runs this criu with its own glibc."""
        return [
            str(self.loader), "--library-path", self.library_path, "--argv0", "criu",
            str(self.criu_binary),
        ]


def install_private_criu(prefix: Path | None = None, *, progress: Progress = print) -> Path:
    """Install Debian trixie's criu into `prefix` and return the prefix.

    Does nothing when `prefix` already contains a criu that runs. The new tree
    is built in a staging directory beside `prefix` and renamed into place,
    so a failed install leaves nothing behind. Raises ProvisionError.
    """
    prefix = (prefix or default_prefix()).expanduser().absolute()
    architecture = check_install_host()

    existing = PrivateCriu.load(prefix)
    if existing is not None and _runs(existing):
        progress(f"criu {existing.version} is already installed in {prefix}; nothing to do.")
        return prefix

    mirror = debian_mirror()
    progress(f"Installing criu from Debian {CRIU_SUITE} ({mirror}) into {prefix}.")
    started = time.monotonic()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{prefix.name}.staging-", dir=prefix.parent))
    try:
        installed = _build(staging, prefix, architecture, mirror, progress)
        _move_into_place(staging / "root", prefix, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    progress(
        f"Installed criu {installed.version} in {prefix} in {time.monotonic() - started:.0f} s "
        f"(command: {installed.wrapper})."
    )
    return prefix


def check_install_host() -> str:
    """Check that this host can install the private criu; return its Debian architecture."""
    missing = [tool for tool in ("apt-get", "dpkg", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise ProvisionError(
            f"Installing the private criu needs Debian's package tools, and this host lacks "
            f"{', '.join(missing)}. Install criu 4.x with this system's package manager "
            "instead, then set THAW_CRIU to its path."
        )
    problem = privilege_problem()
    if problem:
        raise ProvisionError(f"{problem} Then run 'thaw doctor --install-criu' again.")
    if not DEBIAN_KEYRING.is_file():
        raise ProvisionError(
            f"{DEBIAN_KEYRING} is missing, so apt cannot verify Debian's archive. Install it "
            "with 'apt-get install debian-archive-keyring' (on Ubuntu it is in the universe "
            "component), then retry."
        )

    architecture = _run(["dpkg", "--print-architecture"], 30.0, "dpkg --print-architecture")
    architecture = architecture.strip()
    if architecture not in LOADERS:
        raise ProvisionError(
            f"The private criu supports the architectures {', '.join(LOADERS)}, and this host "
            f"is {architecture}. Install criu 4.x with the system's package manager and set "
            "THAW_CRIU to its path."
        )
    return architecture


def debian_mirror() -> str:
    """Return the Debian mirror that this host's apt sources use, else deb.debian.org."""
    release = _os_release()
    if release.get("ID") != "debian":
        return DEFAULT_MIRROR
    codename = release.get("VERSION_CODENAME", "")
    for uri, suites in _apt_sources():
        if codename in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _os_release() -> dict[str, str]:
    fields = {}
    try:
        text = _OS_RELEASE.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


def _apt_sources() -> list[tuple[str, list[str]]]:
    """Return (URI, suites) of each 'deb' source, from deb822 and one-line files."""
    sources = []
    one_line_files = [_APT_SOURCES, *sorted(_APT_SOURCE_PARTS.glob("*.list"))]
    for path in one_line_files:
        for line in _read_text(path).splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                sources.append((words[1], [words[2]]))
    for path in sorted(_APT_SOURCE_PARTS.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read_text(path)):
            fields = _deb822_fields(stanza)
            if "deb" in fields.get("types", "").split():
                for uri in fields.get("uris", "").split():
                    sources.append((uri, fields.get("suites", "").split()))
    return sources


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#"):
            continue
        if line[:1].isspace() and key:
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _build(
    staging: Path, prefix: Path, architecture: str, mirror: str, progress: Progress
) -> PrivateCriu:
    """Download, unpack and check criu under staging/root, ready to become `prefix`."""
    debs = _download(staging / "apt", architecture, mirror, progress)
    root = staging / "root"
    progress(f"Unpacking {len(debs)} packages.")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], UNPACK_TIMEOUT_S, f"dpkg-deb -x {deb.name}")

    # Run the unpacked criu from the staging tree before it replaces anything.
    staged = PrivateCriu(root, architecture, version="", loader_relative=_find_loader(root, architecture))
    try:
        version = read_version(staged.command(), hint="")
    except CriuNotFound as exc:
        raise ProvisionError(f"The downloaded criu does not run here: {exc}") from exc

    installed = PrivateCriu(prefix, architecture, version, staged.loader_relative)
    _write_manifest(root, installed, mirror, debs)
    _write_wrapper(root / "bin/criu", installed)
    return installed


def _find_loader(root: Path, architecture: str) -> str:
    """Return the loader's path relative to `root`: usr/lib/... in trixie, lib/... in bookworm."""
    if architecture not in LOADERS:
        raise ProvisionError(f"The private criu does not support the architecture {architecture}.")
    multiarch, loader_name = LOADERS[architecture]
    for directory in (f"usr/lib/{multiarch}", f"lib/{multiarch}"):
        if (root / directory / loader_name).is_file():
            return f"{directory}/{loader_name}"
    raise ProvisionError(f"The downloaded packages contain no {loader_name}, so criu cannot run.")


def _download(apt_dir: Path, architecture: str, mirror: str, progress: Progress) -> list[Path]:
    config = _write_apt_config(apt_dir, architecture, mirror)
    progress(f"Downloading the package lists of Debian {CRIU_SUITE}.")
    _run(["apt-get", "-c", str(config), "-q", "update"], APT_UPDATE_TIMEOUT_S, "apt-get update")

    progress(f"Downloading {CRIU_PACKAGE} and the libraries it needs.")
    install = ["apt-get", "-c", str(config), "-q", "-y", "--download-only"]
    install += ["--no-install-recommends", "install", CRIU_PACKAGE]
    _run(install, APT_DOWNLOAD_TIMEOUT_S, f"apt-get install --download-only {CRIU_PACKAGE}")

    debs = sorted((apt_dir / "cache/archives").glob("*.deb"))
    if not debs:
        raise ProvisionError(f"apt downloaded no packages for {CRIU_PACKAGE} from {mirror}.")
    megabytes = sum(deb.stat().st_size for deb in debs) / 1e6
    progress(f"Downloaded {len(debs)} packages ({megabytes:.1f} MB).")
    return debs


def _write_apt_config(apt_dir: Path, architecture: str, mirror: str) -> Path:
    """Write an apt configuration whose sources, state and cache all live in `apt_dir`.

    The dpkg status file stays empty, so apt treats nothing as installed and
    downloads the whole closure, trixie's glibc included, which the private
    loader needs. The host's hooks, pins and other sources are cleared.
    """
    for directory in ("etc", "state/lists/partial", "cache/archives/partial"):
        (apt_dir / directory).mkdir(parents=True, exist_ok=True)
    (apt_dir / "state/status").touch()
    _give_partial_dirs_to_apt_sandbox(apt_dir)

    sources = apt_dir / "etc/sources.list"
    sources.write_text(f"deb [signed-by={DEBIAN_KEYRING}] {mirror} {CRIU_SUITE} main\n")
    settings = {
        "Dir::Etc::SourceList": sources,
        "Dir::Etc::SourceParts": "/dev/null",
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": "/dev/null",
        "Dir::State": apt_dir / "state",
        "Dir::State::status": apt_dir / "state/status",
        "Dir::Cache": apt_dir / "cache",
        "APT::Architecture": architecture,
        "APT::Architectures": architecture,
        "Acquire::Languages": "none",
        "Debug::NoLocking": "true",
    }
    lines = [f'{key} "{value}";' for key, value in settings.items()]
    lines += [f"#clear {hook};" for hook in ("APT::Update::Post-Invoke-Success", "APT::Update::Post-Invoke")]
    config = apt_dir / "etc/apt.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def _give_partial_dirs_to_apt_sandbox(apt_dir: Path) -> None:
    """Let apt's unprivileged download user write the partial directories, as in /var/lib/apt."""
    if os.geteuid() != 0:
        return
    try:
        sandbox = pwd.getpwnam("_apt")
    except KeyError:
        return
    os.chmod(apt_dir.parent, 0o755)
    for directory in (apt_dir, apt_dir / "state", apt_dir / "state/lists", apt_dir / "cache",
                      apt_dir / "cache/archives"):
        os.chmod(directory, 0o755)
    for partial in ("state/lists/partial", "cache/archives/partial"):
        os.chown(apt_dir / partial, sandbox.pw_uid, -1)


def _write_manifest(root: Path, installed: PrivateCriu, mirror: str, debs: list[Path]) -> None:
    manifest = {
        "criu_version": installed.version,
        "architecture": installed.architecture,
        "suite": CRIU_SUITE,
        "mirror": mirror,
        "packages": [deb.name for deb in debs],
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _write_wrapper(path: Path, installed: PrivateCriu) -> None:
    """Write a shell script that runs the private criu, for people and for THAW_CRIU."""
    argv = " ".join(shlex.quote(part) for part in installed.command())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n# Runs criu {installed.version} with its own glibc.\nexec {argv} "$@"\n')
    path.chmod(0o755)


def _move_into_place(built: Path, prefix: Path, staging: Path) -> None:
    """Rename `built` to `prefix`; an older tree there moves into `staging` and is deleted with it."""
    if prefix.exists():
        os.rename(prefix, staging / "previous")
    os.rename(built, prefix)


def _runs(installed: PrivateCriu) -> bool:
    try:
        read_version(installed.command())
    except CriuNotFound as exc:
        log.warning("The criu in %s does not run and will be reinstalled: %s", installed.prefix, exc)
        return False
    return True


def _run(argv: list[str], timeout_s: float, description: str) -> str:
    """Run a tool and return its output; raise ProvisionError with the output's tail on failure."""
    log.debug("Running %s", " ".join(argv))
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProvisionError(
            f"{description} timed out after {timeout_s:g} s. Check the network and retry."
        ) from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-ERROR_OUTPUT_LINES:]
        raise ProvisionError(
            f"{description} failed with exit code {result.returncode}:\n  " + "\n  ".join(tail)
        )
    return result.stdout
