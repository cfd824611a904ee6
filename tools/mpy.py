"""Run MicroPython code from the host: the tests, tools/agree.py and other tools.

Two runners, used when present:

- ``unix``: the unix-port MicroPython named by ``$PICONN_MPY_UNIX``, by default the
  build ``build/UNIX/micropython`` (``make firmware BOARD=UNIX``: native emitter, so
  the viper tier, plus the C module ``_nn_c`` when it was built in). ``UNIX_BINARY`` is
  the one place tests and tools find it. ``device/`` comes first on its path, so the
  working tree's ``nn`` is what runs (set ``PICONN_MPY_FROZEN=1`` to use the copy
  frozen into the binary instead).
- ``wasm``: MicroPython's webassembly port (npm package
  ``@micropython/micropython-webassembly-pyscript``, installed into tools/node by
  ``npm ci --prefix tools/node``) through node: the plain-Python tier only.

``runners()`` lists what is available; ``Runner.run(code)`` returns stdout and
raises ``MpError`` when the code raised (or the interpreter failed / timed out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE = ROOT / "device"
UNIX_ENV = "PICONN_MPY_UNIX"  # another unix-port binary, e.g. one without nn frozen in
UNIX_BINARY = Path(os.environ.get(UNIX_ENV) or ROOT / "build" / "UNIX" / "micropython")
NODE_DIR = ROOT / "tools" / "node"
WASM_PACKAGE = NODE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MpError(RuntimeError):
    """MicroPython code raised, or the interpreter failed; stdout/stderr attached."""

    def __init__(self, runner: str, stdout: str, stderr: str, why: str = "raised") -> None:
        tail = (stderr.strip() or stdout.strip()[-2000:])
        super().__init__(f"MicroPython ({runner}) {why}:\n{tail}")
        self.stdout = stdout
        self.stderr = stderr


@dataclass
class Runner:
    """One way to run MicroPython code; `tiers` are the nn kernel tiers it has."""

    name: str
    tiers: tuple[str, ...] = ()
    heap: int = 16 * 1024 * 1024
    _argv: list[str] = field(default_factory=list)

    def run(self, code: str, timeout: float = 120, dirs: tuple[str | Path, ...] = ()) -> str:
        """Run `code`; return stdout. `dirs`: host folders the code reads files from
        (the unix port sees the host filesystem anyway; the webassembly port gets
        copies at the same paths)."""
        if self.name == "unix":
            env = dict(os.environ)
            frozen = os.environ.get("PICONN_MPY_FROZEN") == "1"
            env["MICROPYPATH"] = ".frozen" if frozen else f"{DEVICE}:.frozen"
            with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
                f.write(code)
            try:
                p = subprocess.run([str(UNIX_BINARY), "-X", f"heapsize={self.heap}", f.name], check=False,
                                   capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired as e:
                raise MpError(self.name, _text(e.stdout), _text(e.stderr),
                              f"timed out after {timeout} s") from None
            finally:
                os.unlink(f.name)
        else:
            prelude = f"import sys\nsys.path.insert(0, {str(DEVICE)!r})\n"
            argv = ["node", str(NODE_DIR / "run.mjs"), "--heap", str(self.heap), str(DEVICE)]
            argv += [str(Path(d).resolve()) for d in dirs]
            try:
                p = subprocess.run(argv, input=prelude + code, capture_output=True, text=True, check=False,
                                   timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise MpError(self.name, _text(e.stdout), _text(e.stderr),
                              f"timed out after {timeout} s") from None
        if p.returncode != 0:
            raise MpError(self.name, p.stdout, p.stderr,
                          "raised" if p.returncode == 1 else f"exited with {p.returncode}")
        return p.stdout

    def __str__(self) -> str:
        return self.name


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def unix_runner() -> Runner | None:
    """The unix-port runner (UNIX_BINARY), None if there is no such executable."""
    if not (UNIX_BINARY.is_file() and os.access(UNIX_BINARY, os.X_OK)):
        return None
    r = Runner("unix")
    r.tiers = _tiers(r)
    return r


def wasm_runner() -> Runner | None:
    if shutil.which("node") is None or not (WASM_PACKAGE / "micropython.mjs").is_file():
        return None
    r = Runner("wasm")
    r.tiers = _tiers(r)
    return r


def _tiers(r: Runner) -> tuple[str, ...]:
    out = r.run("import nn\nprint(' '.join(nn.backends()))", timeout=60)
    return tuple(out.split())


_CACHE: dict[str, Runner | None] = {}


def runners() -> list[Runner]:
    """The runners available here (unix first), probed once per process."""
    if not _CACHE:
        _CACHE["unix"] = unix_runner()
        _CACHE["wasm"] = wasm_runner()
    return [r for r in (_CACHE["unix"], _CACHE["wasm"]) if r is not None]


def why_none() -> str:
    """Why no runner is available (for pytest.skip)."""
    return (f"no MicroPython here: neither {UNIX_BINARY} (make firmware BOARD=UNIX, or set "
            f"{UNIX_ENV}) nor node with {WASM_PACKAGE.relative_to(ROOT)} (npm ci --prefix "
            "tools/node)")
