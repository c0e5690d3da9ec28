"""The lock files in requirements/ agree with pyproject.toml, and the Makefile and the Dockerfile use them.

``make lock`` writes them (uv, with every platform's sha256 hashes); ``make setup`` installs
dev-lock.txt and the image lock.txt, both with ``--require-hashes``. These tests fail when a
dependency is added, dropped or re-ranged in pyproject.toml without ``make lock``, when a lock
entry loses its pin or its hashes, and when the image would get other versions than the tests.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
LOCKS = ("lock.txt", "dev-lock.txt", "build-lock.txt")
WEASYPRINT_SERIES = "70."  # the release rendering/weasyprint_overrides.py is checked against
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]
    requirement: Requirement


def parse_lock(text: str, label: str, problems: list[str]) -> dict[NormalizedName, Pin]:
    """The entries of a requirements file; whatever is not `name==version ... --hash=sha256:...`
    is reported in problems."""
    logical = re.sub(r"\\\n", " ", "\n".join(line.split(" #")[0] for line in text.splitlines()))
    pins: dict[NormalizedName, Pin] = {}
    for line in logical.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        spec, _, options = entry.partition(" --")
        options = "--" + options if options else ""
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            problems.append(f"{label}: not a pinned requirement: {entry[:80]}")
            continue
        name = canonicalize_name(requirement.name)
        specifiers = list(requirement.specifier)
        hashes = frozenset(_HASH.findall(options))
        leftover = _HASH.sub("", options).strip()
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            problems.append(
                f"{label}: {name} is not pinned with == ({requirement.specifier or 'no version'})"
            )
        elif not hashes:
            problems.append(f"{label}: {name} has no --hash=sha256: (pip --require-hashes refuses it)")
        elif leftover:
            problems.append(f"{label}: {name} has options other than hashes: {leftover[:80]}")
        if name in pins:
            problems.append(f"{label}: {name} is listed twice")
        version = specifiers[0].version if specifiers else ""
        pins[name] = Pin(version, hashes, requirement)
    return pins


def _check_pinned(
    requirements: Iterable[str], pins: dict[NormalizedName, Pin], label: str, problems: list[str]
) -> None:
    """Each requirement (a pyproject.toml line) is pinned in the lock at a version it allows."""
    for line in requirements:
        wanted = Requirement(line)
        if wanted.marker is not None and not wanted.marker.evaluate():
            continue
        name = canonicalize_name(wanted.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{label}: {name} ({line}) is missing: run `make lock`")
        elif pin.version and not wanted.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{label}: {name}=={pin.version} is outside pyproject.toml's {line!r}")


def lock_problems(pyproject: dict[str, Any], locks: dict[str, str]) -> list[str]:
    """Everything that makes the lock files (by name in LOCKS) disagree with pyproject.toml."""
    problems: list[str] = []
    parsed = {label: parse_lock(locks[label], label, problems) for label in LOCKS}
    runtime = pyproject["project"]["dependencies"]
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    _check_pinned(runtime, parsed["lock.txt"], "lock.txt", problems)
    _check_pinned([*runtime, *dev], parsed["dev-lock.txt"], "dev-lock.txt", problems)
    _check_pinned(
        [*pyproject["build-system"]["requires"], "pip"], parsed["build-lock.txt"], "build-lock.txt", problems
    )
    # The image gets the versions the tests ran with: lock.txt is dev-lock.txt's runtime part.
    for name, pin in parsed["lock.txt"].items():
        tested = parsed["dev-lock.txt"].get(name)
        if tested is None or tested.version != pin.version:
            problems.append(
                f"lock.txt: {name}=={pin.version} but dev-lock.txt has "
                f"{tested.version if tested else 'none'}: run `make lock`"
            )
    for label in ("lock.txt", "dev-lock.txt"):
        weasyprint = parsed[label].get(canonicalize_name("weasyprint"))
        if weasyprint is None or not weasyprint.version.startswith(WEASYPRINT_SERIES):
            found = weasyprint.version if weasyprint else "none"
            problems.append(f"{label}: weasyprint must be {WEASYPRINT_SERIES}x, not {found}")
    return problems


def read_pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def read_locks() -> dict[str, str]:
    return {label: (REQUIREMENTS / label).read_text() for label in LOCKS}


# --- the repository's files -------------------------------------------------------------------------


def test_lock_files_pin_every_pyproject_dependency_with_hashes() -> None:
    problems = lock_problems(read_pyproject(), read_locks())
    assert not problems, "\n".join(problems)


def test_pyproject_allows_only_the_weasyprint_release_the_overrides_are_checked_against() -> None:
    from rendering import weasyprint_overrides

    (line,) = [d for d in read_pyproject()["project"]["dependencies"] if d.startswith("weasyprint")]
    specifier = Requirement(line).specifier
    allowed = [v for v in ("63.0", "69.9", "70.0", "70.2", "71.0") if specifier.contains(v)]
    assert allowed == ["70.0", "70.2"], line
    assert weasyprint_overrides.CHECKED_VERSION == WEASYPRINT_SERIES


def test_installed_packages_are_at_the_locked_versions() -> None:
    """What this test run imports is what dev-lock.txt says (`make setup` installs it again after a
    change); a package the lock lists that is not installed here is left to pip's --require-hashes."""
    pins = parse_lock(read_locks()["dev-lock.txt"], "dev-lock.txt", [])
    drifted = []
    for name, pin in pins.items():
        marker = pin.requirement.marker
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed) != Version(pin.version):
            drifted.append(f"{name}: installed {installed}, locked {pin.version}")
    assert not drifted, "run `make setup`:\n" + "\n".join(drifted)


def test_locked_extras_bring_their_dependencies() -> None:
    """uv writes `confluent-kafka==...` without `[schemaregistry]`, so pip would not add the extra's
    dependencies by itself: they must be in the lock (read from the installed package's metadata)."""
    pins = parse_lock(read_locks()["lock.txt"], "lock.txt", [])
    checked = 0
    for line in read_pyproject()["project"]["dependencies"]:
        wanted = Requirement(line)
        for extra in wanted.extras:
            name = canonicalize_name(wanted.name)
            try:
                requires = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                continue
            for dependency in map(Requirement, requires):
                if dependency.marker is not None and dependency.marker.evaluate({"extra": extra}):
                    checked += 1
                    assert canonicalize_name(dependency.name) in pins, f"{name}[{extra}] needs {dependency}"
    assert checked, "no extra was checked: is confluent-kafka installed?"


def test_make_and_the_image_install_from_the_locks_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.MULTILINE)
    assert stamp
    assert {"pyproject.toml", "requirements/dev-lock.txt", "requirements/build-lock.txt"} <= set(
        stamp[1].split()
    )
    for lock in ("build-lock.txt", "dev-lock.txt"):
        assert re.search(rf"pip install .*--require-hashes.* -r requirements/{lock}$", makefile, re.MULTILINE)
    assert re.search(r"pip install .*--no-deps.* -e \.$", makefile, re.MULTILINE)
    assert re.search(r"^lock:", makefile, re.MULTILINE)

    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    assert re.search(r"pip install --require-hashes -r requirements/build-lock\.txt", dockerfile)
    assert re.search(r"pip wheel --require-hashes [^&]*-r requirements/lock\.txt", dockerfile)
    installs = re.findall(r"--python /opt/ordermail/bin/python install ([^&]*)", dockerfile)
    assert len(installs) == 2
    assert all("--no-deps" in i and "--no-index" in i for i in installs)
    assert "--upgrade pip" not in dockerfile + makefile  # pip itself comes from build-lock.txt


# --- the check itself ---------------------------------------------------------------------------------


def _replace_pin(
    label: str, name: str, version: str, operator: str = "=="
) -> Callable[[dict[str, str]], None]:
    def mutate(locks: dict[str, str]) -> None:
        locks[label] = re.sub(
            rf"^{name}==\S+", f"{name}{operator}{version}", locks[label], flags=re.MULTILINE
        )

    return mutate


def _drop_entry(label: str, name: str) -> Callable[[dict[str, str]], None]:
    def mutate(locks: dict[str, str]) -> None:
        locks[label] = re.sub(rf"^{name}==.*\n(    .*\n)*", "", locks[label], flags=re.MULTILINE)

    return mutate


def _strip_hashes(label: str, name: str) -> Callable[[dict[str, str]], None]:
    def mutate(locks: dict[str, str]) -> None:
        entry = re.search(rf"^{name}==.*\n(    .*\n)*", locks[label], flags=re.MULTILINE)
        assert entry
        bare = re.sub(r"(\s*\\\n\s*--hash=sha256:\w+)+", "", entry[0])
        locks[label] = locks[label].replace(entry[0], bare)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _replace_pin("lock.txt", "weasyprint", "69.0"),
            "lock.txt: weasyprint must be 70.x",
            id="weasyprint-69",
        ),
        pytest.param(
            _replace_pin("dev-lock.txt", "weasyprint", "71.0"),
            "dev-lock.txt: weasyprint must be",
            id="weasyprint-71",
        ),
        pytest.param(
            _replace_pin("lock.txt", "fastavro", "1.8.0"), "fastavro==1.8.0 is outside", id="too-old"
        ),
        pytest.param(
            _replace_pin("lock.txt", "jinja2", "3.1.5"),
            "lock.txt: jinja2==3.1.5 but dev-lock.txt has",
            id="image-differs",
        ),
        pytest.param(
            _replace_pin("build-lock.txt", "setuptools", "68.0.0"),
            "setuptools==68.0.0 is outside",
            id="build",
        ),
        pytest.param(_drop_entry("lock.txt", "pikepdf"), "lock.txt: pikepdf (", id="runtime-missing"),
        pytest.param(_drop_entry("dev-lock.txt", "pytest"), "dev-lock.txt: pytest (", id="dev-missing"),
        pytest.param(
            _drop_entry("build-lock.txt", "pip"), "build-lock.txt: pip (pip) is missing", id="no-pip"
        ),
        pytest.param(_strip_hashes("dev-lock.txt", "ruff"), "ruff has no --hash", id="no-hashes"),
        pytest.param(
            _replace_pin("lock.txt", "babel", "2.14", ">="), "babel is not pinned with ==", id="range"
        ),
    ],
)
def test_a_lock_that_disagrees_is_reported(mutate: Callable[[dict[str, str]], None], expected: str) -> None:
    locks = read_locks()
    mutate(locks)
    assert locks != read_locks(), "the mutation changed nothing"
    problems = lock_problems(read_pyproject(), locks)
    assert any(expected in p for p in problems), problems


def test_a_new_pyproject_dependency_without_make_lock_is_reported() -> None:
    pyproject = read_pyproject()
    pyproject["project"]["dependencies"].append("a-new-dependency>=1")
    pyproject["project"]["optional-dependencies"]["dev"].append("another-one>=2")
    problems = lock_problems(pyproject, read_locks())
    assert "lock.txt: a-new-dependency (a-new-dependency>=1) is missing: run `make lock`" in problems
    assert "dev-lock.txt: another-one (another-one>=2) is missing: run `make lock`" in problems
