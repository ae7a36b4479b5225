"""Access-control overhead: QIDO-RS and C-FIND latency of a constrained principal against an unconstrained one,
same archive, same queries.

    python benchmarks/acl_overhead.py [--instances 3000] [--repeats 100] [--work-dir DIR]

The corpus is benchmarks/corpus.py (CT, 5 patients x 2 studies x 2 series). Three principals, all with
API tokens (Bearer over HTTP, user identity over DIMSE, so that no password hashing is timed):

    open       Query on the whole archive (no constraint)
    covering   Query with PatientID=BENCH* AND Modality=CT: every instance qualifies, so the answers are
               the same as open's and the difference is the price of the constraint alone (worst case)
    selective  Query with PatientID=BENCH-<seed>-0001\\BENCH-<seed>-0003: a subset, for information

Each query runs ``--repeats`` times per principal, interleaved in a rotating order after a warm-up; DIMSE queries run on one association per principal. The table gives the median and the 90th
percentile in milliseconds, and the covering/open ratio of the medians (the goal: at most 1.20). On a shared
machine the latencies are bimodal (some requests wait for a core): many repeats keep the medians steady.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from corpus import CorpusSpec, uid, write_corpus  # noqa: E402
from support import dopamine_command, start_server  # noqa: E402

PRINCIPALS = ["open", "covering", "selective"]
PASSWORD = "bench-password-1"


def _dopamine(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    command = dopamine_command(*args, "--data-dir", str(data_dir))
    return subprocess.run(command, input=stdin, capture_output=True, text=True, check=True, cwd=REPO).stdout


def prepare(work: Path, spec: CorpusSpec) -> tuple[Path, dict[str, str]]:
    files = write_corpus(work / "corpus", spec)
    data_dir = work / "data"
    print(f"importing {len(files)} instances ...", flush=True)
    started = time.monotonic()
    # The files themselves: the folder also holds the corpus manifest, which is not DICOM.
    subprocess.run(dopamine_command("import", "--quiet", "--data-dir", str(data_dir), *map(str, files)),
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    print(f"imported in {time.monotonic() - started:.0f} s", flush=True)
    constraints = {
        "open": [],
        "covering": ["--match", "PatientID=BENCH*", "--match", "Modality=CT"],
        "selective": ["--match", f"PatientID=BENCH-{spec.seed}-0001\\BENCH-{spec.seed}-0003"],
    }
    tokens = {}
    for name in PRINCIPALS:
        _dopamine(data_dir, "user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
        _dopamine(data_dir, "acl", "add", f"user:{name}", "Query", *constraints[name])
        tokens[name] = _dopamine(data_dir, "token", "create", name).strip()
    return data_dir, tokens


def _qido(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(json.loads(response.read()))


def _associate(server, name: str, token: str):
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import UserIdentityNegotiation
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    item = UserIdentityNegotiation()
    item.user_identity_type = 2
    item.primary_field, item.secondary_field = name.encode(), token.encode()  # a token works as the passcode
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(server.host, server.dimse_port, ae_title=server.aet, ext_neg=[item])
    if not assoc.is_established:
        raise SystemExit(f"the archive refused the association of {name}")
    return assoc


def _c_find(assoc, keys: dict[str, str]) -> int:
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    identifier = Dataset()
    for key, value in keys.items():
        setattr(identifier, key, value)
    count = 0
    for status, answer in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        if status and status.Status in (0xFF00, 0xFF01):
            count += 1
        elif status and status.Status != 0x0000:
            raise SystemExit(f"C-FIND failed with status 0x{status.Status:04X}")
    return count


def measure(server, tokens: dict[str, str], spec: CorpusSpec, repeats: int) -> list[tuple[str, str, dict]]:
    study = uid(spec, "study", 2, 1)
    base = server.dicomweb_url
    qido = {
        "QIDO studies (all, with counts)": f"{base}/studies?includefield=NumberOfStudyRelatedInstances,ModalitiesInStudy",
        "QIDO instances of one study": f"{base}/studies/{study}/instances?limit=1000",
        "QIDO instances, PatientID + limit 100": f"{base}/instances?PatientID=BENCH-{spec.seed}-0002&limit=100",
    }
    cfind = {
        "C-FIND STUDY (all, with counts)": {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                            "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""},
        "C-FIND IMAGE of one study": {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": ""},
    }
    associations = {name: _associate(server, name, tokens[name]) for name in PRINCIPALS}
    rows = []
    try:
        cases = [(label, lambda name, url=url: _qido(url, tokens[name])) for label, url in qido.items()]
        cases += [(label, lambda name, keys=keys: _c_find(associations[name], keys)) for label, keys in cfind.items()]
        for label, run_once in cases:
            times: dict[str, list[float]] = {name: [] for name in PRINCIPALS}
            results = {name: run_once(name) for name in PRINCIPALS for _ in range(3)}  # warm-up
            for repeat in range(repeats):
                # The order rotates: whatever follows a heavy request (a garbage collection, a cold cache)
                # falls on each principal in turn.
                shift = repeat % len(PRINCIPALS)
                for name in PRINCIPALS[shift:] + PRINCIPALS[:shift]:
                    started = time.perf_counter()
                    run_once(name)
                    times[name].append((time.perf_counter() - started) * 1000)
            rows.append((label, results, times))
    finally:
        for assoc in associations.values():
            assoc.release()
    return rows


def report(rows, spec: CorpusSpec, repeats: int) -> bool:
    def median(values):
        return statistics.median(values)

    def p90(values):
        return statistics.quantiles(values, n=10)[-1]

    print(f"\n{spec.instances} instances, {spec.patients * spec.studies_per_patient} studies; {repeats} runs per cell; "
          "ms: median (p90); results in [brackets]\n")
    header = f"{'query':40} {'open':>18} {'covering':>18} {'selective':>18} {'covering/open':>14}"
    print(header)
    print("-" * len(header))
    within = True
    for label, results, times in rows:
        cells = [f"{median(times[n]):7.1f} ({p90(times[n]):6.1f}) [{results[n]}]" for n in PRINCIPALS]
        ratio = median(times["covering"]) / median(times["open"])
        within &= ratio <= 1.20
        if results["covering"] != results["open"]:
            raise SystemExit(f"{label}: the covering constraint changed the answer ({results})")
        print(f"{label:40} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} {ratio:14.2f}")
    print(f"\nconstrained within 20% of unconstrained on every query: {'yes' if within else 'NO'}")
    return within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--work-dir", type=Path, help="keep the corpus and archive here (default: a temporary folder)")
    args = parser.parse_args()
    spec = CorpusSpec(instances=args.instances)
    with tempfile.TemporaryDirectory(prefix="dopamine-acl-bench-") as scratch:
        work = args.work_dir or Path(scratch)
        if (work / "data").exists():
            raise SystemExit(f"{work / 'data'} exists: give an empty --work-dir")
        data_dir, tokens = prepare(work, spec)
        server = start_server(data_dir, access="enforced")
        try:
            rows = measure(server, tokens, spec, args.repeats)
        finally:
            server.stop()
    return 0 if report(rows, spec, args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
