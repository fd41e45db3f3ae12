"""Build the query Lambda's zip: the core and `query` dependencies for Lambda's platform, plus the code it imports.

    python deploy/package_lambda.py [--out build/lambda]     (what `make package-lambda` runs)
    python deploy/package_lambda.py --requirements compute   (pinned requirements of an extra, for EMR's bootstrap)

Writes `<out>/wideviews-query.zip` (handler `services.query.lambda_handler.handler`, runtime
python3.11, x86_64) and `<out>/requirements.txt`, and prints the zipped and unzipped sizes. The zip
holds the built explorer page (`explorer/dist`, which `make explorer` builds) at the same place
relative to the code as in the repository, so the Lambda serves it at `/` as the local server does;
without a built page the build fails rather than ship an API whose `/` is a 404. The
dependencies are the wheels of Lambda's platform (manylinux, CPython 3.11), never this machine's
builds, so the zip runs on Lambda whatever machine made it. Fails when the unzipped size is over
Lambda's 250 MB limit (or the zip over the 50 MB of a direct upload).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ZIP_NAME = "wideviews-query.zip"
# Lambda's limits: the unzipped deployment package (code and layers), and a zip uploaded directly.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
# The Lambda python3.11 runtime (Amazon Linux 2, glibc 2.26): manylinux wheels up to 2_26 run there.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_26_x86_64")
# What the handler imports of this repository: the shared package and the query service, nothing else;
# and the explorer page the query app mounts at / (settings.project_root / "explorer" / "dist").
CODE = ("shared", "services/__init__.py", "services/query", "explorer/dist")
# The files of explorer/dist the page needs (build.mjs writes them).
EXPLORER_FILES = ("index.html", "explorer.js", "explorer.css")


def extra_requirements(pyproject: Path, extra: str) -> list[str]:
    """The pinned requirements of `wideviews[extra]`: the core and the extra, self-references expanded."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"error: no extra {extra!r} in {pyproject}; one of {sorted(extras)}")
    wanted: set[str] = set()
    requirements, pending = list(project["dependencies"]), [extra]
    while pending:
        extra = pending.pop()
        if extra in wanted:
            continue
        wanted.add(extra)
        for requirement in extras[extra]:
            own = re.fullmatch(r"wideviews\[([^\]]+)\]", requirement.strip())
            if own:
                pending += [e.strip() for e in own.group(1).split(",")]
            elif requirement not in requirements:
                requirements.append(requirement)
    return requirements


def directory_bytes(path: Path) -> int:
    """The bytes of every file under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_explorer_built(root: Path = PROJECT_ROOT) -> None:
    """Exit with a clear message when explorer/dist lacks one of the page's files (`make explorer` builds them)."""
    missing = [name for name in EXPLORER_FILES if not (root / "explorer" / "dist" / name).is_file()]
    if missing:
        raise SystemExit(f"error: the explorer page is not built ({', '.join(missing)} missing from {root / 'explorer' / 'dist'}): run `make explorer` first")


def build(out: Path) -> Path:
    """Install the dependencies for Lambda's platform into `out/package`, add the code and the page, zip it; returns the zip."""
    check_explorer_built()
    package = out / "package"
    shutil.rmtree(out, ignore_errors=True)
    package.mkdir(parents=True)
    requirements = out / "requirements.txt"
    requirements.write_text("\n".join(extra_requirements(PROJECT_ROOT / "pyproject.toml", "query")) + "\n")
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--target", str(package), "--implementation", "cp", "--python-version", "3.11", *platforms,
         "--only-binary=:all:", "--requirement", str(requirements)],
        check=True,
    )
    for entry in CODE:
        source = PROJECT_ROOT / entry
        if source.is_dir():
            shutil.copytree(source, package / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (package / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, package / entry)
    for cache in list(package.rglob("__pycache__")):
        shutil.rmtree(cache)
    archive = out / ZIP_NAME
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for path in sorted(p for p in package.rglob("*") if p.is_file()):
            z.write(path, path.relative_to(package))
    return archive


def main() -> int:
    """Build the query Lambda's zip (or print an extra's pinned requirements); the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "lambda")
    parser.add_argument("--requirements", metavar="EXTRA", help="only print the pinned requirements of wideviews[EXTRA]")
    args = parser.parse_args()
    if args.requirements:
        print("\n".join(extra_requirements(PROJECT_ROOT / "pyproject.toml", args.requirements)))
        return 0
    archive = build(args.out.resolve())
    unzipped, zipped = directory_bytes(args.out / "package"), archive.stat().st_size
    print(f"{archive}: {zipped / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped (limits {MAX_ZIPPED_BYTES / 1e6:.1f} and {MAX_UNZIPPED_BYTES / 1e6:.1f} MB)")
    if unzipped > MAX_UNZIPPED_BYTES or zipped > MAX_ZIPPED_BYTES:
        print("error: the package is over Lambda's limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
