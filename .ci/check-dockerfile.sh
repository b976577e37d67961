#!/usr/bin/env bash
# Checks the Dockerfile's build stage without a container engine (none runs
# in CI):
#
# - every path its build stage COPYs from the build context exists;
# - a copy of the context holding only those paths builds with the
#   Dockerfile's own `cargo build` command lines (read from its RUN lines,
#   with `/src`, the image's work dir, mapped to that copy), and each
#   binary a RUN line then copies out of target/ exists.
#
# So a crate added to the workspace but not to the COPY lines, or a path a
# manifest needs that the image lacks, fails here rather than in a
# `docker build` nobody ran. To keep CI short the release profile is built
# without optimisation (CARGO_PROFILE_RELEASE_OPT_LEVEL=0, overridable);
# what is checked is that the command lines build, not the binary's speed.
# Usage: .ci/check-dockerfile.sh [Dockerfile]
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERFILE=${1:-Dockerfile}
CACHE="${INVALOG_CACHE:-$PWD/.cache}"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${CARGO_PROFILE_RELEASE_OPT_LEVEL:-0}
# Kept between runs so that only the workspace's own crates rebuild.
export DOCKER_CHECK_TARGET="$CACHE/dockerfile-target"

python3 - "$DOCKERFILE" <<'PY'
"""Stages the Dockerfile's build context and runs its cargo command lines."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

dockerfile = sys.argv[1]
problems = []


def instructions(text):
    """(keyword, arguments) of each instruction, continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    for item in logical:
        keyword, _, rest = item.partition(" ")
        yield keyword.upper(), rest.strip()


stages, stage = {}, None
for keyword, rest in instructions(open(dockerfile, encoding="utf-8").read()):
    if keyword == "FROM":
        match = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
        stage = match.group(1) if match else rest
        stages[stage] = {"copy": [], "run": [], "workdir": "/"}
    elif stage is None:
        continue
    elif keyword == "WORKDIR":
        stages[stage]["workdir"] = rest
    elif keyword == "COPY" and "--from=" not in rest:
        stages[stage]["copy"].append(shlex.split(rest))
    elif keyword == "RUN":
        stages[stage]["run"].append(rest)

build = stages.get("build")
if build is None:
    sys.exit(f"{dockerfile}: no stage named `build`")
workdir = build["workdir"].rstrip("/")

context = tempfile.mkdtemp(prefix="invalog-dockerfile-")
try:
    for args in build["copy"]:
        *sources, dest = args
        for source in sources:
            if not os.path.exists(source):
                problems.append(f"{dockerfile}: COPY {source}: no such path in the build context")
                continue
            if dest.endswith("/"):
                target = os.path.join(context, dest, os.path.basename(source.rstrip("/")))
            else:
                target = os.path.join(context, dest)
            os.makedirs(os.path.dirname(os.path.normpath(target)), exist_ok=True)
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("target", ".cache"))
            else:
                shutil.copy2(source, target)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)

    env = dict(os.environ, CARGO_TARGET_DIR=os.environ["DOCKER_CHECK_TARGET"])
    built = 0
    for run in build["run"]:
        # Drop RUN's own options (--mount=...), then split on `&&`.
        command = re.sub(r"^(--\S+\s+)+", "", run)
        for part in command.split("&&"):
            words = shlex.split(part.replace(workdir + "/", "").replace(workdir, "."))
            assignments = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                name, _, value = words.pop(0).partition("=")
                assignments[name] = value
            if words[:2] == ["cargo", "build"]:
                # CARGO_TARGET_DIR is the check's own (kept between runs).
                assignments.pop("CARGO_TARGET_DIR", None)
                print(f"check-dockerfile: {' '.join(words)}", flush=True)
                result = subprocess.run(words, cwd=context, env=dict(env, **assignments))
                if result.returncode != 0:
                    problems.append(f"{dockerfile}: `{' '.join(words)}` failed (exit {result.returncode})")
                built += 1
            elif words[:1] == ["cp"] and words[1].startswith("target/"):
                artifact = os.path.join(env["CARGO_TARGET_DIR"], words[1][len("target/"):])
                if not os.path.isfile(artifact):
                    problems.append(f"{dockerfile}: `{' '.join(words)}`: {words[1]} was not built")
    if built == 0:
        problems.append(f"{dockerfile}: the build stage runs no `cargo build`")
finally:
    shutil.rmtree(context, ignore_errors=True)

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-dockerfile: {dockerfile} OK ({built} cargo build command lines)")
PY
