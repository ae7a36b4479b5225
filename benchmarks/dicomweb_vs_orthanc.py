"""DICOMweb speed, Dopamine against Debian's Orthanc + DICOMweb plugin, side by side in one run.

    python benchmarks/dicomweb_vs_orthanc.py [--instances 2000] [--series-size 1000] [--batch 50]
                                             [--repeats 15] [--work-dir DIR] [--keep-logs]

Both archives are started empty, on free ports of 127.0.0.1, and hold the same corpus (loaded through
STOW-RS, which is the first figure). Every request is made by the same client (``requests`` with one
keep-alive session per archive); the requests to the two archives are interleaved (A B, B A, ...), so a
change of machine load weighs on both. Figures:

- STOW-RS ingest, instances/s: ``--batch`` instances per multipart/related request, over one
  keep-alive connection, after an untimed warm-up corpus;
- QIDO-RS latency, ms, for typical searches (median of ``--repeats``, after two untimed);
- WADO-RS series metadata, ms, of a series of ``--series-size`` instances;
- WADO-RS series retrieval, MB/s (the same series, as stored).

Dopamine runs with access control not enforced (a configuration file with ``[auth] enforce = false``,
passed with --config): no credentials are checked, as Orthanc's ``AuthenticationEnabled: false``.
Every server is stopped at the end, on error and on Ctrl-C/SIGTERM, and dies with the script even if the
script is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from corpus import CorpusSpec, write_corpus  # noqa: E402
from ingest_dimse import BenchmarkError, _load, _tail, _terminate, machine, run_in_work_dir, serve_dopamine  # noqa: E402
from orthanc import free_port, orthanc_version, start_orthanc  # noqa: E402

WARMUP_SEED = 2
BIG_SERIES_SEED = 3
DICOMWEB_PLUGIN_PLACES = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
ACCEPT_JSON = {"Accept": "application/dicom+json"}


# ------------------------------------------------------------------------------------------- archives


@dataclass
class Archive:
    """A running archive: the root of its DICOMweb service, how to stop it, its process (for profilers)."""

    name: str
    root: str
    pid: int
    stop: Callable[[], None]
    log: Callable[[], str]
    session: requests.Session = field(default_factory=requests.Session)


def start_dopamine_web(work_dir: Path, source: Path = REPO, timeout: float = 60) -> Archive:
    """`dopamine serve` with the embedded store, access control not enforced (stated in the config file).
    ``source`` is the checkout whose code runs (run from its folder, it comes first on sys.path)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "dopamine.toml"
    config.write_text("[auth]\nenforce = false\n")
    http_port = free_port()
    log_path = work_dir / "serve.log"
    process = serve_dopamine(["--config", str(config), "--data-dir", str(work_dir / "data"),
                              "--dimse-port", str(free_port()), "--http-port", str(http_port)], log_path, source, timeout)
    return Archive("Dopamine", f"http://127.0.0.1:{http_port}/dicom-web", process.pid,
                   stop=lambda: _terminate(process), log=lambda: _tail(log_path))


def dicomweb_plugin() -> Path:
    for folder in DICOMWEB_PLUGIN_PLACES:
        for candidate in sorted(folder.glob("libOrthancDicomWeb.so*")):
            return candidate
    raise BenchmarkError("Orthanc's DICOMweb plugin is missing: apt-get install orthanc-dicomweb")


def start_orthanc_web(work_dir: Path) -> Archive:
    """Orthanc with its DICOMweb plugin under /dicom-web, its defaults kept (full series metadata, read
    from the stored files)."""
    orthanc = start_orthanc(work_dir, plugins=[str(dicomweb_plugin())],
                            extra_config={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    return Archive("Orthanc", f"{orthanc.url}/dicom-web", orthanc.process.pid, stop=orthanc.stop,
                   log=lambda: _tail(orthanc.log_path))


# ----------------------------------------------------------------------------------------- requests


def multipart_body(paths: list[Path]) -> tuple[bytes, str]:
    """One STOW-RS request body (prepared before timing, so the client only sends bytes)."""
    boundary = uuid.uuid4().hex
    pieces = []
    for path in paths:
        pieces += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path.read_bytes(), b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode())
    return b"".join(pieces), f"{DICOM_MULTIPART}; boundary={boundary}"


def stow(archive: Archive, body: bytes, content_type: str, expected: int) -> None:
    response = archive.session.post(f"{archive.root}/studies", data=body,
                                    headers={"Content-Type": content_type, **ACCEPT_JSON}, timeout=600)
    if response.status_code != 200:
        raise BenchmarkError(f"STOW-RS to {archive.name}: HTTP {response.status_code}: {response.text[:2000]}")
    stored = response.json().get("00081199", {}).get("Value", [])
    if len(stored) != expected:
        raise BenchmarkError(f"STOW-RS to {archive.name}: {len(stored)} instances stored of {expected}")


def get_json(archive: Archive, path: str) -> tuple[int, object]:
    response = archive.session.get(archive.root + path, headers=ACCEPT_JSON, timeout=600)
    if response.status_code == 204 or not response.content:
        return response.status_code, []
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text[:300]


def retrieve_bytes(archive: Archive, path: str) -> int:
    """GET a multipart/related series as stored, streamed; the bytes received."""
    accept = f"{DICOM_MULTIPART}; transfer-syntax=*"
    total = 0
    with archive.session.get(archive.root + path, headers={"Accept": accept}, stream=True, timeout=600) as response:
        if response.status_code != 200:
            raise BenchmarkError(f"WADO-RS from {archive.name}: HTTP {response.status_code}: {response.text[:500]}")
        for chunk in response.iter_content(1 << 20):
            total += len(chunk)
    return total


def timed(action: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, client CPU seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = action()
    return time.perf_counter() - wall, time.process_time() - cpu, result


# --------------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    name: str
    unit: str
    higher_is_better: bool
    target: float = 1.0  # how many times better than Orthanc Dopamine must be
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    answers: dict[str, object] = field(default_factory=dict)  # what each archive answered, to compare
    client_cpu: list[float] = field(default_factory=list)  # client CPU share of the wall time

    def median(self, archive: str) -> float | None:
        v = self.values.get(archive)
        return statistics.median(v) if v else None

    def speedup(self) -> float | None:
        """How many times better Dopamine is than Orthanc (over 1: better)."""
        d, o = self.median("Dopamine"), self.median("Orthanc")
        if not d or not o:
            return None
        return d / o if self.higher_is_better else o / d


def interleaved(archives: list[Archive], rounds: int, action: Callable[[Archive, int], None]) -> None:
    """Run ``action`` ``rounds`` times on every archive, alternating which goes first."""
    for n in range(rounds):
        for archive in (archives if n % 2 == 0 else archives[::-1]):
            action(archive, n)


def measure_stow(archives: list[Archive], batches: list[tuple[bytes, str, int]], figure: Figure) -> None:
    totals = {a.name: [0.0, 0] for a in archives}
    per_batch: dict[str, list[float]] = {a.name: [] for a in archives}
    cpu_share: list[float] = []

    def send(archive: Archive, n: int) -> None:
        body, content_type, count = batches[n]
        wall, cpu, _ = timed(lambda: stow(archive, body, content_type, count))
        totals[archive.name][0] += wall
        totals[archive.name][1] += count
        per_batch[archive.name].append(count / wall)
        cpu_share.append(cpu / wall)

    interleaved(archives, len(batches), send)
    for name, (seconds, count) in totals.items():
        # The figure is the whole load's rate; the per-batch rates give its spread.
        figure.values[name] = [count / seconds]
        rates = sorted(per_batch[name])
        figure.notes[name] = (f"{count} in {seconds:.1f} s; per request median {statistics.median(rates):.0f}, "
                              f"range {rates[0]:.0f} to {rates[-1]:.0f}")
    figure.client_cpu = cpu_share


def measure_latency(archives: list[Archive], path: str, figure: Figure, repeats: int,
                    check: Callable[[Archive, object], str]) -> None:
    for archive in archives:  # untimed warm-up; also what each archive answers
        status, answer = get_json(archive, path)
        get_json(archive, path)
        figure.notes[archive.name] = f"HTTP {status}, " + check(archive, answer)
        figure.answers[archive.name] = (status, len(answer) if isinstance(answer, list) else answer)

    def once(archive: Archive, n: int) -> None:
        wall, cpu, _ = timed(lambda: get_json(archive, path))
        figure.values.setdefault(archive.name, []).append(wall * 1000)
        figure.client_cpu.append(cpu / wall)

    interleaved(archives, repeats, once)


def measure_retrieve(archives: list[Archive], path: str, figure: Figure, repeats: int, expected_bytes: int) -> None:
    def once(archive: Archive, n: int) -> None:
        wall, cpu, received = timed(lambda: retrieve_bytes(archive, path))
        if received < expected_bytes:
            raise BenchmarkError(f"WADO-RS from {archive.name}: {received} bytes, the files hold {expected_bytes}")
        if n >= 1:  # the first round is the warm-up
            figure.values.setdefault(archive.name, []).append(received / wall / 1e6)
            figure.client_cpu.append(cpu / wall)
        figure.notes[archive.name] = f"{received / 1e6:.1f} MB per retrieval"

    interleaved(archives, repeats + 1, once)


def count_answer(archive: Archive, answer: object) -> str:
    if isinstance(answer, list):
        return f"{len(answer)} results"
    return f"answer {str(answer)[:120]!r}"


def held(archive: Archive) -> int:
    """Instances held, summed over the series (QIDO-RS NumberOfSeriesRelatedInstances)."""
    status, answer = get_json(archive, "/series?includefield=00201209&limit=1000")
    if status != 200 or not isinstance(answer, list):
        raise BenchmarkError(f"{archive.name}: cannot list the series: HTTP {status} {answer!r}")
    return sum(int((s.get("00201209", {}).get("Value") or [0])[0]) for s in answer)


# -------------------------------------------------------------------------------------------------- run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DICOMweb: Dopamine vs Orthanc, side by side.")
    parser.add_argument("--instances", type=int, default=2000, help="instances of the mixed corpus (20 series)")
    parser.add_argument("--series-size", type=int, default=1000, help="instances of the one big series")
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request")
    parser.add_argument("--warmup", type=int, default=100, help="untimed STOW-RS instances sent first")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of each QIDO-RS search")
    parser.add_argument("--series-repeats", type=int, default=5, help="timed repeats of metadata and retrieval")
    parser.add_argument("--work-dir", type=Path, help="where corpora and stores go (default: a temporary folder)")
    parser.add_argument("--dopamine-source", type=Path, default=REPO,
                        help="checkout of Dopamine to run (default: this one); to measure a prototype side by side")
    parser.add_argument("--pause", action="store_true",
                        help="after loading, print the server pids and wait for Enter (to attach a profiler)")
    args = parser.parse_args(argv)
    if min(args.instances, args.series_size, args.batch, args.warmup, args.repeats, args.series_repeats) < 1:
        parser.error("every count must be at least 1")

    return run_in_work_dir(lambda root: _benchmark(args, root), args.work_dir, "dopamine-dicomweb-bench-")


def _benchmark(args: argparse.Namespace, root: Path) -> int:
    import pydicom

    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average {_load()} (the CPUs may be shared)")
    print(f"software: Orthanc {orthanc_version()} + {dicomweb_plugin().resolve().name}, pydicom {pydicom.__version__}, "
          f"requests {requests.__version__}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"Dopamine from {args.dopamine_source.resolve()}, access control not enforced ([auth] enforce = false)")
    mixed = write_corpus(root / "corpus", CorpusSpec(instances=args.instances))
    big_spec = CorpusSpec(instances=args.series_size, seed=BIG_SERIES_SEED, patients=1, studies_per_patient=1,
                          series_per_study=1)
    big = write_corpus(root / "big-series", big_spec)
    warmup = write_corpus(root / "warmup", CorpusSpec(instances=args.warmup, seed=WARMUP_SEED))
    corpus = mixed + big
    big_bytes = sum(p.stat().st_size for p in big)
    print(f"corpus: {len(mixed)} CT instances in 20 series + one series of {len(big)}, "
          f"{sum(p.stat().st_size for p in corpus) / 1e6:.1f} MB; warm-up {len(warmup)} instances; "
          f"STOW-RS batches of {args.batch}")

    def batches_of(paths: list[Path]) -> list[tuple[bytes, str, int]]:
        chunks = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
        return [(*multipart_body(chunk), len(chunk)) for chunk in chunks]

    warmup_batches, batches = batches_of(warmup), batches_of(corpus)
    first_big = pydicom.dcmread(big[0], stop_before_pixels=True)
    study, series = first_big.StudyInstanceUID, first_big.SeriesInstanceUID

    archives: list[Archive] = []
    try:
        archives.append(start_dopamine_web(root / "dopamine", args.dopamine_source.resolve()))
        archives.append(start_orthanc_web(root / "orthanc"))
        for a in archives:
            print(f"{a.name}: {a.root} (pid {a.pid})")
        print(f"\nloading (STOW-RS, interleaved), load average {_load()} ...", flush=True)
        for body, content_type, count in warmup_batches:
            for a in archives:
                stow(a, body, content_type, count)
        figures = [Figure(f"STOW-RS ingest ({args.batch}/request)", "inst/s", True)]
        measure_stow(archives, batches, figures[0])
        for a in archives:
            count = held(a)
            if count != len(warmup) + len(corpus):
                raise BenchmarkError(f"{a.name} holds {count} instances, {len(warmup) + len(corpus)} were sent")
        if args.pause:
            input(f"loaded; pids {', '.join(f'{a.name} {a.pid}' for a in archives)}; Enter to measure ")

        print(f"querying, load average {_load()} ...", flush=True)
        searches = [
            # Orthanc 1.10.1 + DICOMweb 1.7 finds nothing when the value holds a "^"; the second form
            # (what OHIF's study list sends) is answered alike by both.
            ("QIDO studies PatientName=Bench^Patient001*", "/studies?PatientName=Bench%5EPatient001*"),
            ("QIDO studies PatientName=*Patient001*", "/studies?PatientName=*Patient001*"),
            ("QIDO studies StudyDate=20240101-20240331", "/studies?StudyDate=20240101-20240331"),
            ("QIDO series Modality=CT", "/series?Modality=CT"),
            ("QIDO series ConvolutionKernel=LUNG (not indexed)", "/series?ConvolutionKernel=LUNG"),
            (f"QIDO instances of the {len(big)}-instance series", f"/studies/{study}/series/{series}/instances"),
        ]
        for name, path in searches:
            figure = Figure(name, "ms", False)
            measure_latency(archives, path, figure, args.repeats, count_answer)
            figures.append(figure)

        print(f"retrieving, load average {_load()} ...", flush=True)
        metadata = Figure(f"WADO-RS series metadata ({len(big)} inst)", "ms", False, target=2.0)
        measure_latency(archives, f"/studies/{study}/series/{series}/metadata", metadata, args.series_repeats,
                        count_answer)
        figures.append(metadata)
        retrieval = Figure(f"WADO-RS series retrieval ({len(big)} inst)", "MB/s", True)
        measure_retrieve(archives, f"/studies/{study}/series/{series}", retrieval, args.series_repeats, big_bytes)
        figures.append(retrieval)
    except BenchmarkError as exc:
        logs = "\n".join(f"--- end of the {a.name} log:\n{a.log()}" for a in archives)
        raise BenchmarkError(f"{exc}\n{logs}") from None
    finally:
        for a in archives:
            a.stop()

    report(figures)
    print(f"load average now {_load()}")
    return 0


def report(figures: list[Figure]) -> None:
    print(f"\n{'figure':<50} {'Dopamine':>10} {'Orthanc':>10} {'unit':<6} {'D vs O':>7} {'target':>7}  met")
    for f in figures:
        d, o, s = f.median("Dopamine"), f.median("Orthanc"), f.speedup()
        met = "yes" if s is not None and s >= f.target else "NO"
        if len({repr(a) for a in f.answers.values()}) > 1:
            met += " (the answers differ: see below)"
        print(f"{f.name:<50} {_num(d):>10} {_num(o):>10} {f.unit:<6} {_ratio(s):>7} {f'x{f.target:g}':>7}  {met}")
    print("\n'D vs O': how many times better Dopamine is (inverse latency ratio for ms, rate ratio for /s); "
          "medians.")
    print("what each archive answered, and the client's CPU share of the wall time (a low share: "
          "the client is not the bottleneck):")
    for f in figures:
        share = f"client CPU {statistics.median(f.client_cpu):.0%} (max {max(f.client_cpu):.0%})" if f.client_cpu else ""
        print(f"  {f.name}: {share}")
        for name, note in f.notes.items():
            print(f"      {name:<9} {note}")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
