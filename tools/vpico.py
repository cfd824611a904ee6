"""Virtual Pico: boot a firmware UF2 in the rp2040py emulator and talk to it.

The emulator (PyPI ``rp2040py``) runs in a child process and serves the
MicroPython console on a TCP port; scripts go through mpremote's raw-REPL
transport over ``socket://``. The emulated RP2040 runs one core at a
nominal 125 MHz: ``time.ticks_us()`` follows emulated cycles, not wall time.

    with VirtualPico("build/PICO/firmware.uf2") as pico:
        print(pico.run_script("device/demo_mnist.py"))

Options: ``count_flash=True`` starts the emulator with a flash-read counter
(``count_on(lo, hi)`` ... ``count_off()`` -> bytes read in [lo, hi));
``put_file``/``mkdir``/``remove`` manage the device filesystem through the REPL.

Command line:
    python tools/vpico.py serve build/PICO/firmware.uf2 --port 2040   # until Ctrl-C
    python tools/vpico.py run build/PICO/firmware.uf2 script.py [-c CODE]
    python tools/vpico.py speed build/PICO/firmware.uf2                # emulated MHz
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

if TYPE_CHECKING:
    from typing_extensions import Self

EMULATED_HZ = 125_000_000  # the emulator's fixed clock for time.ticks_us()
_LISTENING = re.compile(rb"listening on ([0-9.]+):(\d+)")
_READY = "piconn-vpico-ready"
_COUNTER_ENTRY = "_emulate-counting"  # argv[1] of this file: the emulator with a flash counter
_COUNTER_AT = re.compile(r"flash counter on ([0-9.]+):(\d+)")
_XIP_ALIAS_MASK = 0xFCFFFFFF  # folds the XIP aliases 0x11.., 0x12.., 0x13.. onto 0x10..
PUT_CHUNK = 12_000  # bytes per REPL command when writing a file


class VirtualPicoError(RuntimeError):
    """The emulator failed to start, died, or a script raised on the device."""


class DeviceError(VirtualPicoError):
    """A script raised on the device; ``stdout`` and ``stderr`` hold its output."""

    def __init__(self, stdout: str, stderr: str) -> None:
        super().__init__(f"script raised on the virtual Pico:\n{stderr.strip()}")
        self.stdout = stdout
        self.stderr = stderr


def _read_source(script: str | os.PathLike[str]) -> str:
    """Code from a path (Path, or a one-line str ending in .py that names a file) or a str."""
    if isinstance(script, os.PathLike):
        return Path(script).read_text()
    if not isinstance(script, str):
        raise TypeError(f"script must be code (str) or a path, not {type(script).__name__}")
    if "\n" not in script and script.endswith(".py") and os.path.isfile(script):
        return Path(script).read_text()
    return script


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of a process (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class VirtualPico:
    """A running emulated Pico with a MicroPython UF2, driven over mpremote.

    ``port=0`` lets the OS choose a free port (see ``.port`` once started).
    ``count_flash=True`` runs the emulator with the flash-read counter
    (``count_on``/``count_off``).
    One client at a time can hold the console: while this object is
    connected, an outside ``mpremote`` cannot (``serve`` mode disconnects).
    """

    def __init__(self, uf2: str | os.PathLike[str], port: int = 0, host: str = "127.0.0.1",
                 boot_timeout: float = 180.0, log: str | os.PathLike[str] | None = None,
                 count_flash: bool = False) -> None:
        self.uf2 = Path(uf2)
        if not self.uf2.is_file():
            raise FileNotFoundError(f"no firmware image at {self.uf2}: run `make firmware` first")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be an int in 0..65535, not {port!r}")
        self.host = host
        self.port = port
        self.boot_timeout = boot_timeout
        self._log_path = Path(log) if log is not None else None
        self._own_log = log is None  # a temporary log, removed by stop()
        self._log_file = None
        self.count_flash = bool(count_flash)
        self._proc: subprocess.Popen[bytes] | None = None
        self._transport: SerialTransport | None = None
        self._counter: socket.socket | None = None  # control link of the flash counter
        self._counter_io: TextIO | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The emulator's command line: rp2040py's CLI, or with ``count_flash`` this file's
        entry that wraps it with the flash-read counter."""
        args = ["micropython", "--image", str(self.uf2), "--tcp-port", str(self.port)]
        if self.count_flash:
            return [sys.executable, str(Path(__file__).resolve()), _COUNTER_ENTRY, *args]
        return [sys.executable, "-m", "rp2040py", *args]

    def start(self) -> VirtualPico:
        """Start the emulator and wait until MicroPython's REPL answers."""
        if self._proc is not None:
            return self
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="vpico-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                      stdout=self._log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            self.port = self._wait_listening()
            if self.count_flash:
                self._connect_counter()
            self.connect()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + self.boot_timeout
        assert self._proc is not None and self._log_path is not None
        while time.monotonic() < deadline:
            m = _LISTENING.search(self._log_path.read_bytes())
            if m:
                return int(m.group(2))
            if self._proc.poll() is not None:
                raise VirtualPicoError(f"emulator exited with code {self._proc.returncode}:\n"
                                       + self.log_text()[-2000:])
            time.sleep(0.05)
        raise VirtualPicoError(f"emulator did not listen within {self.boot_timeout:.0f} s")

    def connect(self) -> None:
        """Open the console and wait until a command runs (the REPL answers)."""
        if self._transport is not None:
            return
        deadline = time.monotonic() + self.boot_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                t = SerialTransport(f"socket://{self.host}:{self.port}", timeout=30)
            except TransportError as e:  # port not accepting yet
                last = e
                time.sleep(0.2)
                continue
            try:
                t.enter_raw_repl(soft_reset=False, timeout_overall=30)
                out, err = self._exec_on(t, f"print({_READY!r})", 60)
                if _READY in out:
                    self._transport = t
                    return
                last = VirtualPicoError(f"unexpected answer {out!r} {err!r}")
            except (TransportError, OSError) as e:
                last = e
            t.close()
            time.sleep(0.5)
        raise VirtualPicoError(f"the REPL did not answer within {self.boot_timeout:.0f} s: {last}")

    def disconnect(self) -> None:
        """Release the console (leave raw REPL) so another client can connect."""
        if self._transport is not None:
            try:
                self._transport.exit_raw_repl()
                self._transport.close()
            except (OSError, TransportError):
                pass
            self._transport = None

    def stop(self) -> None:
        """Disconnect and stop the emulator (SIGTERM, then SIGKILL after 10 s)."""
        self.disconnect()
        if self._counter is not None:
            if self._counter_io is not None:
                self._counter_io.close()
            self._counter.close()
            self._counter = self._counter_io = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The emulator's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        """The emulator's own output so far (not the device console)."""
        return self._log_path.read_text(errors="replace") if self._log_path else ""

    def _check_alive(self) -> None:
        if self._proc is None:
            raise VirtualPicoError("the virtual Pico is not running: call start()")
        if self._proc.poll() is not None:
            raise VirtualPicoError(f"emulator exited with code {self._proc.returncode}:\n"
                                   + self.log_text()[-2000:])

    # -- running code ------------------------------------------------------------------------
    @staticmethod
    def _exec_on(t: SerialTransport, code: str, timeout: float) -> tuple[str, str]:
        # Ask for raw-paste mode (flow-controlled) every time: mpremote drops it for the
        # connection after one unclear answer (boot output, a slow emulator), and the plain
        # raw REPL's unpaced 256-byte writes overrun a loaded emulator's console.
        t.use_raw_paste = True
        t.exec_raw_no_follow(code.encode())
        out = t.read_until(1, b"\x04", timeout=None, timeout_overall=timeout)
        if not out.endswith(b"\x04"):
            raise VirtualPicoError(f"no answer within {timeout:.0f} s (output so far: {out!r})")
        err = t.read_until(1, b"\x04", timeout=None, timeout_overall=timeout)
        if not err.endswith(b"\x04"):
            raise VirtualPicoError(f"no end of error output within {timeout:.0f} s")

        def text(b: bytes) -> str:
            return b[:-1].decode(errors="replace").replace("\r\n", "\n")

        return text(out), text(err)

    def run_script(self, script: str | os.PathLike[str], timeout: float = 600.0,
                   soft_reset: bool = True) -> str:
        """Run code (a str) or a .py file on the device and return its stdout.

        ``soft_reset`` first restarts MicroPython (fresh heap, no leftover
        modules), like ``mpremote run``. Raises DeviceError if the script
        raised, VirtualPicoError if the device stops answering.
        """
        code = _read_source(script)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if self._transport is None:
            self._check_alive()
            self.connect()
        t = self._transport
        assert t is not None
        try:
            if soft_reset:
                t.enter_raw_repl(soft_reset=True, timeout_overall=60)
            out, err = self._exec_on(t, code, timeout)
        except (TransportError, OSError) as e:
            self._check_alive()
            raise VirtualPicoError(f"lost the console: {e}") from e
        except VirtualPicoError:
            self._check_alive()
            # Interrupt the runaway script so that the next call starts clean.
            t.serial.write(b"\r\x03\x03")
            self.disconnect()
            raise
        if err:
            raise DeviceError(out, err)
        return out

    def eval(self, expression: str, timeout: float = 60.0) -> str:
        """``repr()`` of an expression evaluated on the device (no soft reset)."""
        return self.run_script(f"print(repr({expression}))", timeout, soft_reset=False).strip()

    # -- files -------------------------------------------------------------------------------
    def put_file(self, path: str, data: bytes, chunk: int = PUT_CHUNK) -> None:
        """Write ``data`` to ``path`` on the device filesystem (base64 chunks, no soft reset)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        for k in range(0, max(len(data), 1), chunk):
            b64 = base64.b64encode(data[k:k + chunk]).decode()
            mode = "wb" if k == 0 else "ab"
            self.run_script(f"from binascii import a2b_base64\nf = open({path!r}, {mode!r})\n"
                            f"f.write(a2b_base64({b64!r}))\nf.close()\n", soft_reset=False)

    def mkdir(self, path: str) -> None:
        """Make a directory on the device; nothing if it exists."""
        self.run_script(f"import os\ntry:\n    os.mkdir({path!r})\nexcept OSError:\n    pass\n",
                        soft_reset=False)

    def remove(self, *paths: str) -> None:
        """Remove files on the device; missing ones are skipped."""
        self.run_script(f"import os\nfor f in {list(paths)!r}:\n    try:\n        os.remove(f)\n"
                        "    except OSError:\n        pass\n", soft_reset=False)

    # -- flash-read counter (count_flash=True) ----------------------------------------------
    def _connect_counter(self) -> None:
        m = _COUNTER_AT.search(self.log_text())
        if m is None:
            raise VirtualPicoError("the emulator did not start its flash counter")
        self._counter = socket.create_connection((m.group(1), int(m.group(2))), timeout=30)
        self._counter_io = self._counter.makefile("rw")

    def _ask_counter(self, line: str) -> str:
        if not self.count_flash:
            raise VirtualPicoError("no flash counter: start the VirtualPico with count_flash=True")
        if self._counter_io is None:
            raise VirtualPicoError("the virtual Pico is not running: call start()")
        self._counter_io.write(line + "\n")
        self._counter_io.flush()
        answer = self._counter_io.readline().strip()
        if not answer or answer.startswith("error"):
            raise VirtualPicoError(f"flash counter: {answer or 'no answer'}")
        return answer

    def count_on(self, lo: int, hi: int) -> None:
        """Count (from zero) the bytes of every bus read in flash [lo, hi), any XIP alias."""
        self._ask_counter(f"on {int(lo)} {int(hi)}")

    def count_off(self) -> int:
        """Stop counting; the bytes read since count_on."""
        return int(self._ask_counter("off"))

    # -- speed -------------------------------------------------------------------------------
    def measure_speed(self, emulated_ms: int = 300) -> dict[str, float]:
        """Emulated MHz per wall second (and per emulator CPU second, on Linux).

        Busy-waits for ``emulated_ms`` and for 3x that on the device; the
        difference cancels the fixed cost of each call.
        """
        if not isinstance(emulated_ms, int) or emulated_ms <= 0:
            raise ValueError(f"emulated_ms must be a positive int, not {emulated_ms!r}")
        spin = ("import time\nt0 = time.ticks_us()\n"
                "while time.ticks_diff(time.ticks_us(), t0) < {us}:\n    pass\n"
                "print(time.ticks_diff(time.ticks_us(), t0))\n")
        runs = []
        for us in (emulated_ms * 1000, 3 * emulated_ms * 1000):
            cpu0, w0 = _cpu_seconds(self.pid or 0), time.perf_counter()
            got = int(self.run_script(spin.format(us=us), soft_reset=False))
            cpu1, w1 = _cpu_seconds(self.pid or 0), time.perf_counter()
            runs.append((got, w1 - w0, None if cpu0 is None or cpu1 is None else cpu1 - cpu0))
        d_us = runs[1][0] - runs[0][0]
        d_wall = runs[1][1] - runs[0][1]
        res = {"emulated_s": d_us / 1e6, "wall_s": d_wall,
               "mhz_per_wall_s": d_us * EMULATED_HZ / 1e12 / d_wall}
        if runs[0][2] is not None and runs[1][2] is not None:
            d_cpu = runs[1][2] - runs[0][2]
            res["cpu_s"] = d_cpu
            res["mhz_per_cpu_s"] = d_us * EMULATED_HZ / 1e12 / d_cpu if d_cpu > 0 else float("nan")
        return res


def _emulate_counting(argv: list[str]) -> int:
    """rp2040py's command line with a flash-read counter (the child of count_flash=True).

    The counter replaces the MCU's read_uint8/16/32 while on (the Cython core dispatches
    to instance attributes), adding the bytes of every read whose address (any XIP alias)
    falls in [lo, hi). A line protocol on a TCP port (printed to stdout as "flash counter
    on HOST:PORT") switches it: `on LO HI` -> `ok`, `off` -> the byte count.
    """
    from rp2040py.cli import main as rp2040py_main
    from rp2040py.device import base_device
    from rp2040py.rp2040 import RP2040

    mcus: list = []
    build = base_device.build_rp2040_from_spec

    def build_and_keep(spec):  # rp2040py's own types
        mcu = build(spec)
        mcus.append(mcu)
        return mcu

    base_device.build_rp2040_from_spec = build_and_keep
    count = [0]

    def on(lo: int, hi: int) -> None:
        mcu = mcus[-1]
        r32, r16, r8 = RP2040.read_uint32, RP2040.read_uint16, RP2040.read_uint8

        def read32(a: int) -> int:
            if lo <= (a & _XIP_ALIAS_MASK) < hi:
                count[0] += 4
            return r32(mcu, a)

        def read16(a: int) -> int:
            if lo <= (a & _XIP_ALIAS_MASK) < hi:
                count[0] += 2
            return r16(mcu, a)

        def read8(a: int) -> int:
            if lo <= (a & _XIP_ALIAS_MASK) < hi:
                count[0] += 1
            return r8(mcu, a)

        count[0] = 0
        mcu.read_uint32, mcu.read_uint16, mcu.read_uint8 = read32, read16, read8

    def off() -> int:
        for name in ("read_uint32", "read_uint16", "read_uint8"):
            mcus[-1].__dict__.pop(name, None)
        return count[0]

    srv = socket.create_server(("127.0.0.1", 0))
    print(f"flash counter on 127.0.0.1:{srv.getsockname()[1]}", flush=True)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            with conn, conn.makefile("rw") as f:
                for line in f:
                    words = line.split()
                    try:
                        if words[:1] == ["on"] and len(words) == 3:
                            on(int(words[1]), int(words[2]))
                            f.write("ok\n")
                        elif words == ["off"]:
                            f.write(f"{off()}\n")
                        else:
                            f.write(f"error unknown command {line.strip()!r}\n")
                    except (IndexError, ValueError) as e:
                        f.write(f"error {e}\n")
                    f.flush()

    threading.Thread(target=serve, daemon=True).start()
    rp2040py_main(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: serve, run or speed (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_COUNTER_ENTRY]:
        return _emulate_counting(argv[1:])
    p = argparse.ArgumentParser(description="Run a MicroPython UF2 on the virtual Pico.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("serve", help="serve the console on a TCP port until Ctrl-C")
    ps.add_argument("uf2")
    ps.add_argument("--port", type=int, default=2040)
    pr = sub.add_parser("run", help="run scripts (or -c code) and print their output")
    pr.add_argument("uf2")
    pr.add_argument("scripts", nargs="*")
    pr.add_argument("-c", dest="code", action="append", default=[], help="code to run")
    pr.add_argument("--timeout", type=float, default=600.0)
    pb = sub.add_parser("speed", help="measure emulated MHz per wall second")
    pb.add_argument("uf2")
    pb.add_argument("--ms", type=int, default=300, help="emulated milliseconds per run")
    a = p.parse_args(argv)
    try:
        if a.cmd == "serve":
            # SIGTERM (and SIGINT, even where a shell ignores it for background jobs) stops
            # the emulator cleanly instead of orphaning it.
            def _interrupt(signum: int, frame: object) -> None:
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGINT, _interrupt)
            pico = VirtualPico(a.uf2, port=a.port)
            t0 = time.monotonic()
            with pico:
                pico.disconnect()  # leave the console to the user's client
                url = f"socket://{pico.host}:{pico.port}"
                print(f"virtual Pico up in {time.monotonic() - t0:.1f} s ({a.uf2}), console on {url}\n"
                      f"  .venv/bin/mpremote connect {url} run device/demo_mnist.py\n"
                      f"  .venv/bin/mpremote connect {url} repl   (Ctrl-] to leave)\n"
                      "Ctrl-C stops the emulator.", flush=True)
                try:
                    while pico._proc is not None and pico._proc.poll() is None:
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    print("\nstopping the virtual Pico")
            return 0
        if a.cmd == "run":
            jobs: list[str | Path] = [Path(s) for s in a.scripts] + list(a.code)
            if not jobs:
                p.error("give a script or -c CODE")
            with VirtualPico(a.uf2) as pico:
                for job in jobs:
                    sys.stdout.write(pico.run_script(job, timeout=a.timeout))
            return 0
        with VirtualPico(a.uf2) as pico:
            r = pico.measure_speed(a.ms)
        line = (f"emulated {r['emulated_s']:.3f} s of RP2040 time in {r['wall_s']:.2f} s wall: "
                f"{r['mhz_per_wall_s']:.2f} emulated MHz per wall second")
        if "mhz_per_cpu_s" in r:
            line += f", {r['mhz_per_cpu_s']:.2f} per emulator CPU second"
        print(line)
        return 0
    except DeviceError as e:
        sys.stdout.write(e.stdout)
        print(e.stderr, file=sys.stderr)
        return 1
    except (VirtualPicoError, OSError, ValueError) as e:
        print(f"vpico: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
