"""The documentation runs: every shell and Python block in README.md and docs/ is executed, so it cannot drift.

Conventions the docs follow (see docs/contributing.md):

- A ```sh block is one shell session, run by bash with ``set -e`` from a
  scratch folder that links the repository's Makefile, pyproject.toml,
  .venv, examples/ and docs/, with the venv's bin/ first on PATH.
- A line starting with ``make serve`` (written ``make serve ARGS="..."``) or
  ``niyama serve`` starts a server in the background on a free port (every
  ``8080`` in the block becomes that port); the lines after it talk to it; at
  the end of the block it gets SIGTERM and must exit 0. One server per block.
- A block that talks to ``127.0.0.1:8080`` without starting a server, and
  every ```python block, run against a shared default server.
- ``<!-- docs-test: smoke N -->`` before a block: the command is long (a
  full evaluation, a device profile); it must still be running, without
  error, after N seconds, and is then stopped: SIGTERM to its process group,
  and it must end (with whatever it started) within a minute.
- Nothing a block starts may outlive it: each runs with its own marker in
  its environment, and a process still carrying it once the block has ended
  is killed and fails the block.
- ``make test`` and ``pytest ...`` lines are this suite itself and are not run again. ```text blocks are
  templates with placeholders (paths to your own model, other machines) and
  are not run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from niyama.bench.servers import free_port, running_server

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINKED = ("Makefile", "pyproject.toml", ".venv", "examples", "docs")
FENCE = re.compile(r"(?:<!-- docs-test: smoke (\d+) -->\n)?```(sh|python)\n(.*?)```", re.S)
SERVE = re.compile(r"^(make serve|(?:\S*/)?niyama serve)\b(.*)$", re.M)
SELF = re.compile(r"^\s*(make test|(?:\S*/)?pytest)\b")  # the suite itself, or part of it
STARTUP_TIMEOUT = 900  # a first start on a machine profiles the device
STOP_GRACE = 60  # seconds a stopped smoke run has to end, with what it started
BLOCK_MARKER = "NIYAMA_DOCS_BLOCK"  # in the environment of everything a block starts

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    smoke: int | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            smoke = int(match.group(1)) if match.group(1) else None
            code = "\n".join(line for line in match.group(3).splitlines() if not SELF.match(line))
            if code.strip():
                found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(2), code, smoke))
    return found


def serve_line(command: str, rest: str, port: int) -> str:
    """A serve command with its port set, started in the background and waited for."""
    rest = re.sub(r"\s+#.*$", "", rest)  # a trailing comment
    if command == "make serve":
        arguments = re.fullmatch(r'\s*(?:ARGS="([^"]*)")?\s*', rest)
        assert arguments, f'write `make serve` as `make serve ARGS="..."`, not {rest!r}'
        # Run exactly the recipe `make serve` runs (after its install step), as the job itself, so
        # SIGTERM reaches the server and its exit status is the job's.
        recipe = f'make -s -n serve ARGS="{arguments.group(1) or ""} --port {port}"'
        launch = f'make -s venv\neval "exec $({recipe})"'
    else:
        launch = f"{command}{rest} --port {port}"
    return f"{launch} &\nwait_healthy {port}"


def shell_script(code: str, port: int) -> str:
    body = SERVE.sub(lambda m: serve_line(m.group(1), m.group(2).replace("--port 8080", ""), port), code)
    prelude = f"""
        set -euo pipefail
        curl() {{ command curl --fail-with-body "$@"; }}  # an HTTP error fails the block
        wait_healthy() {{
          for _ in $(seq {STARTUP_TIMEOUT * 2}); do
            command curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
            jobs -r | grep -q . || {{ echo "the server exited at start-up" >&2; return 1; }}
            sleep 0.5
          done
          return 1
        }}
        stop_servers() {{
          local status=0
          for job in $(jobs -p); do kill -TERM "$job"; wait "$job" || status=$?; done
          return $status
        }}
    """
    return textwrap.dedent(prelude) + body.replace("8080", str(port)) + "\nstop_servers\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture(scope="module")
def default_server(workdir, environment):
    """One `niyama serve` with defaults for every block that only calls a server."""
    args = ["--log-level", "warning"]
    with running_server(args, timeout=STARTUP_TIMEOUT, env=environment, cwd=workdir) as (process, url):
        yield int(url.rsplit(":", 1)[1])
    assert process.returncode == 0, f"the default server exited with {process.returncode} on SIGTERM"


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the block's own group: started with a session of its own
    except ProcessLookupError:
        pass


def finish(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Its output and how it ended: "finished", "stopped" (SIGTERM after ``timeout`` s) or "killed".

    A stopped block's group gets SIGTERM, so the command can stop what it
    started; SIGKILL after ``STOP_GRACE`` s. Whatever is left in the group at
    the end gets SIGKILL.
    """
    try:
        how, output = "finished", process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGTERM)
        try:
            how, output = "stopped", process.communicate(timeout=STOP_GRACE)[0]
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            how, output = "killed", process.communicate()[0]
    signal_group(process, signal.SIGKILL)
    return output, how


def run(block: Block, workdir: Path, env: dict[str, str], port: int, processes) -> None:
    if block.language == "python":
        argv = [sys.executable, "-c", block.code.replace("8080", str(port))]
    else:
        argv = ["bash", "-c", shell_script(block.code, port)]
    marker = uuid.uuid4().hex
    process = subprocess.Popen(argv, cwd=workdir, env={**env, BLOCK_MARKER: marker}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, how = finish(process, block.smoke or STARTUP_TIMEOUT)
    finally:
        left = processes.end(processes.marked(BLOCK_MARKER, marker), grace=5.0)
    assert how != "killed", f"{block.id} did not end within {STOP_GRACE} s of SIGTERM:\n{output}"
    assert not left, f"{block.id} left processes running (killed now):\n" + "\n".join(left) + f"\n{output}"
    if how == "stopped":
        assert block.smoke, f"{block.id} did not finish:\n{output}"
        return
    assert process.returncode == 0, f"{block.id} failed ({process.returncode}):\n{output}"
    assert block.smoke is None, f"{block.id} is marked smoke {block.smoke} but finished: drop the marker"


BLOCKS = blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_documented_block_runs(block: Block, workdir, environment, request, processes):
    starts_server = block.language == "sh" and SERVE.search(block.code)
    needs_server = block.language == "python" or (not starts_server and "127.0.0.1:8080" in block.code)
    port = request.getfixturevalue("default_server") if needs_server else free_port()
    run(block, workdir, environment, port, processes)


def documented_routes() -> set[tuple[str, str]]:
    routes, table = set(), (ROOT / "docs" / "http_api.md").read_text().split("## Routes", 1)[1].split("\n## ", 1)[0]
    for row in table.splitlines()[4:]:
        method = None
        for item in re.findall(r"`([^`]+)`", row.split("|")[1]):
            method, _, path = item.rpartition(" ") if " " in item else (method, " ", item)
            routes.add((method, path))
    return routes


def test_http_api_page_lists_exactly_the_served_routes():
    from niyama.router.app import ROUTES
    from niyama.router.openapi import openapi_document

    served = {(method, route.path) for route in ROUTES for method in route.methods or () if method != "HEAD"}
    assert documented_routes() == served
    assert set(openapi_document()["paths"]) <= {path for _, path in served}
