"""DIMSE ingest benchmark: the same synthetic CT corpus stored into Dopamine and into Orthanc.

    python benchmarks/ingest_dimse.py [--instances N] [--runs R] [--sender storescu|pynetdicom]
                                      [--compare-senders] [--work-dir DIR]

Each run starts the archive afresh (empty store, free ports on 127.0.0.1, a temporary folder), sends a
warm-up corpus that is not timed, then sends the measured corpus over ONE association and checks that
the archive holds every instance. Runs alternate between the archives (A B, B A, ...) so that a
change of machine load weighs on both; the figure reported is the median over runs.

The sender is first measured against a sink (DCMTK storescp --ignore, which receives and discards):
its rate there is the ceiling of what this machine can show, so an archive measured well under it is
the bottleneck, not the sender. Every socket involved has TCP_NODELAY: Dopamine sets it itself,
pynetdicom through ``dopamine_py.dimse.enable_tcp_nodelay``, DCMTK (storescu, storescp, and Orthanc,
which uses DCMTK's network layer) through the environment variable TCP_NODELAY=1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from corpus import CorpusSpec, write_corpus  # noqa: E402
from orthanc import die_with_parent, free_port, orthanc_version, start_orthanc  # noqa: E402

SCU_AET = "BENCHSCU"
WARMUP_SEED = 2
# DCMTK disables Nagle only when asked (see module doc). Its tools are looked up on a PATH without this
# Python environment's scripts: pynetdicom installs a storescu and a storescp with options of their own.
OWN_SCRIPTS = Path(sys.prefix, "bin").resolve()
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1",
             "PATH": os.pathsep.join(d for d in os.get_exec_path() if d and Path(d).resolve() != OWN_SCRIPTS)}


class BenchmarkError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- senders


@dataclass
class Sent:
    count: int
    seconds: float


class Sender(Protocol):
    name: str

    def send(self, paths: list[Path], aet: str, port: int, host: str = "127.0.0.1") -> Sent: ...


class StorescuSender:
    """DCMTK storescu, all files over one association, proposing only the contexts the files need."""

    name = "storescu"

    def send(self, paths: list[Path], aet: str, port: int, host: str = "127.0.0.1") -> Sent:
        folder = {p.parent for p in paths}
        if len(folder) != 1:
            raise BenchmarkError("storescu sender expects the files of one folder")
        cmd = ["storescu", "--required", "-aet", SCU_AET, "-aec", aet, host, str(port),
               "--scan-directories", "--scan-pattern", "CT*.dcm", str(folder.pop())]
        if len(paths) != len(list(Path(cmd[-1]).glob("CT*.dcm"))):
            raise BenchmarkError("storescu sends the whole folder: it must hold exactly the files to send")
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=DCMTK_ENV, timeout=3600)
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or "E:" in proc.stderr or "F:" in proc.stderr:
            raise BenchmarkError(f"storescu to {aet}:{port} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return Sent(len(paths), seconds)


class PynetdicomSender:
    """A pynetdicom SCU in this process; files are sent from disk without being decoded."""

    name = "pynetdicom"

    def send(self, paths: list[Path], aet: str, port: int, host: str = "127.0.0.1") -> Sent:
        from pydicom import dcmread
        from pynetdicom import AE
        from dopamine_py.dimse import enable_tcp_nodelay

        enable_tcp_nodelay()
        first = dcmread(paths[0], stop_before_pixels=True)
        ae = AE(ae_title=SCU_AET)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
        start = time.perf_counter()
        assoc = ae.associate(host, port, ae_title=aet)
        if not assoc.is_established:
            raise BenchmarkError(f"association with {aet}@{host}:{port} refused or aborted")
        try:
            for number, path in enumerate(paths):
                status = assoc.send_c_store(path, msg_id=number % 65535 + 1)
                if not status or status.Status != 0x0000:
                    raise BenchmarkError(f"C-STORE of {path.name} to {aet}: status {getattr(status, 'Status', None)}")
        finally:
            assoc.release()
        return Sent(len(paths), time.perf_counter() - start)


SENDERS: dict[str, Callable[[], Sender]] = {"storescu": StorescuSender, "pynetdicom": PynetdicomSender}


# ------------------------------------------------------------------------------------------- archives


@dataclass
class Running:
    """An archive started for one run: where to send, how to count what it holds, how to stop it."""

    aet: str
    port: int
    count: Callable[[], int]
    stop: Callable[[], None]
    pid: int  # of the server process, for a profiler to attach to
    log: Callable[[], str] = lambda: ""


def start_sink(work_dir: Path) -> Running:
    """storescp --ignore: receives every C-STORE and discards it; the sender's ceiling."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(work_dir / "storescp.log", "wb")
    process = subprocess.Popen(["storescp", "--ignore", "-aet", "SINK", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=DCMTK_ENV, preexec_fn=die_with_parent)
    log.close()
    _wait_for_port(port, process, "storescp")
    return Running("SINK", port, count=lambda: -1, stop=lambda: _terminate(process),
                   pid=process.pid, log=lambda: _tail(work_dir / "storescp.log"))


def serve_dopamine(args: list[str], log_path: Path, source: Path, timeout: float) -> subprocess.Popen:
    """`dopamine serve ARGS` on 127.0.0.1, run from ``source`` (its code first on sys.path), once it says
    it is ready; it dies with this script."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "dopamine_py.cli", "serve", "--host", "127.0.0.1", *args],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=source, preexec_fn=die_with_parent)
    deadline = time.monotonic() + timeout
    while "Dopamine-py ready" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(process)
            raise BenchmarkError(f"dopamine serve did not start:\n{_tail(log_path)}")
        time.sleep(0.1)
    return process


def start_dopamine(work_dir: Path, aet: str = "DOPAMINE", timeout: float = 60, ruleset: Path | None = None,
                   source: Path = REPO) -> Running:
    """`dopamine serve` with the embedded store in ``work_dir``, on free ports of 127.0.0.1; with
    ``ruleset`` active for every input (keyed actions get a throwaway key); run from the checkout ``source``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    dimse_port, http_port = free_port(), free_port()
    log_path = work_dir / "serve.log"
    config = work_dir / "dopamine.toml"
    secrets = work_dir / "secrets.toml"
    secrets.write_text('deidentification = "benchmark key, not a secret"\n')
    config.write_text(f'[routing]\nsecrets_file = "{secrets}"\n')
    if ruleset is not None:
        activated = subprocess.run([sys.executable, "-m", "dopamine_py.cli", "rules", "activate", str(ruleset),
                                    "--data-dir", str(data_dir)], capture_output=True, text=True, cwd=source)
        if activated.returncode != 0:
            raise BenchmarkError(f"cannot activate {ruleset}: {activated.stdout}{activated.stderr}")
    # Access control as shipped (deny by default), with the rule a site adds for a sending modality.
    grant = subprocess.run([sys.executable, "-m", "dopamine_py.cli", "acl", "add", "--data-dir", str(data_dir),
                            f"aet:{SCU_AET}@127.0.0.1", "Store"], capture_output=True, text=True, cwd=source)
    if grant.returncode != 0:
        raise BenchmarkError(f"cannot allow {SCU_AET} to store: {grant.stdout}{grant.stderr}")
    process = serve_dopamine(["--config", str(config), "--data-dir", str(data_dir), "--aet", aet,
                              "--dimse-port", str(dimse_port), "--http-port", str(http_port)],
                             log_path, source, timeout)

    def count() -> int:
        # Counted through the archive API once the server is stopped (SQLite then has one writer only).
        from dopamine_py.cli import open_archive
        from dopamine_py.config import load_settings
        from dopamine_py.matching import Query
        from dopamine_py.storage.base import Level

        _terminate(process)
        archive = open_archive(load_settings(None, {"data_dir": str(data_dir)}))
        try:
            return archive.count(Level.IMAGE, Query())
        finally:
            archive.backend.close()

    return Running(aet, dimse_port, count=count, stop=lambda: _terminate(process), pid=process.pid,
                   log=lambda: _tail(log_path))


def start_reference(work_dir: Path) -> Running:
    orthanc = start_orthanc(work_dir, allowed_peers={SCU_AET: "127.0.0.1"})
    return Running(orthanc.aet, orthanc.dimse_port, count=orthanc.count_instances, stop=orthanc.stop,
                   pid=orthanc.process.pid, log=lambda: _tail(orthanc.log_path))


ARCHIVES: dict[str, Callable[[Path], Running]] = {"Dopamine": start_dopamine, "Orthanc": start_reference}


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    _terminate(process)
    raise BenchmarkError(f"{name} did not listen on {port} within {timeout}s")


# ---------------------------------------------------------------------------------------------- runs


def alternating_runs(archives: dict[str, Callable[[Path], Running]], runs: int, root: Path, sender: Sender,
                     warmup: list[Path], corpus: list[Path]) -> dict[str, list[float]]:
    """Each archive measured ``runs`` times, alternating the order (A B, B A, ...) so that a change of
    machine load weighs on both; instances/s per archive, printed as they come."""
    rates: dict[str, list[float]] = {name: [] for name in archives}
    width = max(map(len, archives))
    for run in range(runs):
        for name in list(archives) if run % 2 == 0 else list(reversed(archives)):
            rate = measure(archives[name], root / f"{name.lower().replace(' ', '-')}-{run}", sender, warmup, corpus)
            rates[name].append(rate)
            print(f"run {run + 1} {name:<{width}} {rate:8.1f} instances/s")
    return rates


def measure(start: Callable[[Path], Running], work_dir: Path, sender: Sender,
            warmup: list[Path], corpus: list[Path], verify: bool = True) -> float:
    """One run: a fresh archive, the untimed warm-up, the timed corpus; instances per second."""
    work_dir.mkdir(parents=True)  # a fresh, empty folder: each run starts from an empty store
    running = start(work_dir)
    try:
        sender.send(warmup, running.aet, running.port)
        sent = sender.send(corpus, running.aet, running.port)
        if verify:
            held = running.count()
            if held != len(warmup) + len(corpus):
                raise BenchmarkError(f"{running.aet} holds {held} instances, {len(warmup) + len(corpus)} were sent")
    except BenchmarkError as exc:
        raise BenchmarkError(f"{exc}\n--- end of the {running.aet} log:\n{running.log()}") from None
    finally:
        running.stop()
        shutil.rmtree(work_dir, ignore_errors=True)  # keeps disk use to one run's worth
    return sent.count / sent.seconds


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _tool_versions() -> str:
    import pydicom
    import pynetdicom

    storescu = subprocess.run(["storescu", "--version"], capture_output=True, text=True, env=DCMTK_ENV).stdout.split()
    dcmtk = storescu[2].lstrip("v") if len(storescu) > 2 else "?"
    return (f"Orthanc {orthanc_version()}, DCMTK {dcmtk}, pydicom {pydicom.__version__}, "
            f"pynetdicom {pynetdicom.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DIMSE ingest: Dopamine vs Orthanc, instances per second.")
    parser.add_argument("--instances", type=int, default=2000, help="instances in the measured corpus (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed instances sent first to each archive")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per archive (default 2; median reported)")
    parser.add_argument("--sender", choices=sorted(SENDERS), default="storescu")
    parser.add_argument("--compare-senders", action="store_true",
                        help="measure every sender against the sink, not only the one used")
    parser.add_argument("--work-dir", type=Path, help="where corpora and stores go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.instances < 1 or args.runs < 1 or args.warmup < 1:
        parser.error("--instances, --runs and --warmup must be at least 1")
    for tool in ("storescu", "storescp"):
        if shutil.which(tool, path=DCMTK_ENV["PATH"]) is None:
            print(f"{tool} is missing: apt-get install dcmtk", file=sys.stderr)
            return 2

    return run_in_work_dir(lambda root: _benchmark(args, root), args.work_dir, "dopamine-bench-")


def run_in_work_dir(benchmark: Callable[[Path], int], work_dir: Path | None, prefix: str) -> int:
    """Run ``benchmark(root)`` in ``work_dir``, or in a temporary folder removed afterwards; an error, Ctrl-C
    or SIGTERM ends it through the finally blocks that stop every server it started."""
    signal.signal(signal.SIGTERM, _interrupt)
    owned_tmp = work_dir is None
    root = Path(tempfile.mkdtemp(prefix=prefix)) if owned_tmp else work_dir
    root.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(root)
    except KeyboardInterrupt:
        print("interrupted: every server started has been stopped", file=sys.stderr)
        return 130
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if owned_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _benchmark(args: argparse.Namespace, root: Path) -> int:
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average {_load()} (the CPUs may be shared)")
    print(f"software: {_tool_versions()}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    spec = CorpusSpec(instances=args.instances)
    corpus = write_corpus(root / "corpus", spec)
    warmup = write_corpus(root / "warmup", CorpusSpec(instances=args.warmup, seed=WARMUP_SEED))
    size = sum(p.stat().st_size for p in corpus)
    print(f"corpus: {len(corpus)} CT instances of {size / len(corpus) / 1024:.1f} KiB, {spec.patients} patients, "
          f"{spec.series_count} series; warm-up {len(warmup)} instances; one association per send\n")

    sender = SENDERS[args.sender]()
    senders = [SENDERS[n]() for n in sorted(SENDERS)] if args.compare_senders else [sender]
    ceilings = {}
    for s in senders:
        try:
            ceilings[s.name] = measure(start_sink, root / f"sink-{s.name}", s, warmup, corpus, verify=False)
        except BenchmarkError as exc:
            if s.name == sender.name:
                raise
            # Seen with pynetdicom 3.0.4 as requestor: its reactor takes a C-STORE response meant for
            # send_c_store ("Received unexpected C-STORE service message") and the association aborts.
            print(f"sender {s.name:<10} into a discarding sink: FAILED ({str(exc).splitlines()[0]})")
            continue
        print(f"sender {s.name:<10} into a discarding sink (storescp --ignore): {ceilings[s.name]:8.0f} instances/s")

    rates = alternating_runs(ARCHIVES, args.runs, root, sender, warmup, corpus)

    medians = {name: statistics.median(r) for name, r in rates.items()}
    mb_per_instance = size / len(corpus) / 1e6
    print(f"\nsender: {sender.name} (ceiling {ceilings[sender.name]:.0f} instances/s into a sink)")
    print(f"{'archive':<10} {'runs (instances/s)':<26} {'median inst/s':>13} {'median MB/s':>11}")
    for name, r in rates.items():
        runs = ", ".join(f"{x:.1f}" for x in r)
        print(f"{name:<10} {runs:<26} {medians[name]:>13.1f} {medians[name] * mb_per_instance:>11.2f}")
    ratio = medians["Dopamine"] / medians["Orthanc"]
    print(f"ratio Dopamine/Orthanc: {ratio:.2f}  (target >= 1.0, aim 2.0); load average now {_load()}")
    slowest_share = max(medians.values()) / ceilings[sender.name]
    if slowest_share > 0.5:
        print(f"WARNING: the faster archive reaches {slowest_share:.0%} of the sender's ceiling: "
              f"the sender may limit it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
