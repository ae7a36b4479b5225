"""The access-control matrix: its corpus, its principals and rules, and the clients that act as them.

One archive, loaded once, where every constrained principal may see the same data:

    Query, Retrieve:  PatientID=LAB* AND Modality=MR
    Store:            PatientID=INBOX* AND Modality=MR    (so that stored data never change what queries see)

The corpus, studies in StudyInstanceUID order (the order QIDO pages in), hidden ones between visible ones:

    A   LAB1    MR: 2 + 1 instances in two series         visible
    F   OTHER1  MR: 2 instances                           hidden (other patient)
    M   LAB2    MR: 2 instances, CT: 3 instances          mixed: the MR series visible, the CT series hidden
    H1  OTHER2  MR: 1 instance                            hidden
    B1  LAB3    MR: 1 instance                            visible
    H2  OTHER3  MR: 1 instance                            hidden
    B2  LAB4    MR: 1 instance                            visible
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from dimse_client import synthesize
from support import require_tool, run

ROOT = "1.2.826.0.1.3680043.10.1066"
LAB_DATA = ["PatientID=LAB*", "Modality=MR"]
INBOX_DATA = ["PatientID=INBOX*", "Modality=MR"]
MAX_RESULTS = 4  # = the visible studies: a Warning header for alice would betray hidden studies


def study_uid(n: int) -> str:
    return f"{ROOT}.1.{n}"


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    modality: str
    patient: str
    path: Path

    @property
    def visible(self) -> bool:
        return self.patient.startswith("LAB") and self.modality == "MR"


@dataclass
class Corpus:
    instances: list[Instance] = field(default_factory=list)

    def of_study(self, study: str, visible: bool | None = None) -> list[Instance]:
        return [i for i in self.instances if i.study == study and (visible is None or i.visible == visible)]

    @property
    def studies(self) -> list[str]:
        return sorted({i.study for i in self.instances})

    @property
    def visible_studies(self) -> list[str]:
        return sorted({i.study for i in self.instances if i.visible})

    @property
    def hidden(self) -> list[Instance]:
        return [i for i in self.instances if not i.visible]

    def hidden_uids(self) -> set[str]:
        """Every UID that only hidden instances carry (a study UID shared with a visible instance is not)."""
        shown = {u for i in self.instances if i.visible for u in (i.study, i.series, i.sop)}
        return {u for i in self.hidden for u in (i.study, i.series, i.sop)} - shown


A, F, M, H1, B1, H2, B2 = (study_uid(n) for n in range(1, 8))
LAYOUT = [  # study, patient, [(modality, instances in the series), ...]
    (A, "LAB1", [("MR", 2), ("MR", 1)]),
    (F, "OTHER1", [("MR", 2)]),
    (M, "LAB2", [("MR", 2), ("CT", 3)]),
    (H1, "OTHER2", [("MR", 1)]),
    (B1, "LAB3", [("MR", 1)]),
    (H2, "OTHER3", [("MR", 1)]),
    (B2, "LAB4", [("MR", 1)]),
]


def write_corpus(folder: Path) -> Corpus:
    corpus = Corpus()
    for study_number, (study, patient, series_list) in enumerate(LAYOUT, 1):
        for series_number, (modality, count) in enumerate(series_list, 1):
            series = f"{ROOT}.2.{study_number}.{series_number}"
            for number in range(1, count + 1):
                sop = f"{ROOT}.3.{study_number}.{series_number}.{number}"
                path = synthesize(folder / f"{sop}.dcm", patient_id=patient, patient_name=f"Matrix^{patient}",
                                  study_uid=study, series_uid=series, sop_uid=sop, modality=modality,
                                  sop_class=MRImageStorage if modality == "MR" else CTImageStorage,
                                  instance_number=number)
                corpus.instances.append(Instance(study, series, sop, modality, patient, path))
    return corpus


# ------------------------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """Someone the tests act as. ``user``/``password`` for logins, ``aet`` for AE-title principals."""

    label: str
    user: str | None = None
    password: str | None = None
    aet: str = "MATRIXSCU"
    token_of: str | None = None  # the Bearer token of this user (filled in by the fixture)

    def http_headers(self, tokens: dict[str, str]) -> dict[str, str]:
        if self.token_of:
            return {"Authorization": f"Bearer {tokens[self.token_of]}"}
        if self.user:
            basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}


ALICE = Principal("user", "alice", "alice-local-pass")
RITA = Principal("local-group", "rita", "rita-local-pass")  # in group radiology (dopamine user groups)
CAROL = Principal("ldap-group", "carol", "carol-pass-333")  # in LDAP group mri-physics
ALICE_TOKEN = Principal("user-token", token_of="alice")
LABSCU = Principal("aet", aet="LABSCU")  # rules for aet:LABSCU@127.0.0.1
ANONYMOUS = Principal("anonymous", aet="NOBODY")
WRONG_PASSWORD = Principal("wrong-password", "alice", "not-alices-password")
BOSS = Principal("control", "boss", "boss-local-pass")  # Query and Retrieve on the whole archive
QUINN = Principal("query-only", "quinn", "quinn-local-pass")  # Query on the whole archive, nothing else
ADMIN = Principal("admin", "admin", "admin-local-pass")

CONSTRAINED_HTTP = [ALICE, RITA, CAROL, ALICE_TOKEN]
CONSTRAINED_DIMSE_USERS = [ALICE, RITA, CAROL]
LOCAL_USERS = {p.user: p.password for p in (ALICE, RITA, BOSS, QUINN, ADMIN)}

# (principal, service, constraints)
RULES: list[tuple[str, str, list[str]]] = []
for _who in ("user:alice", "group:radiology", "group:mri-physics", "aet:LABSCU@127.0.0.1"):
    RULES += [(_who, "Echo", []), (_who, "Query", LAB_DATA), (_who, "Retrieve", LAB_DATA), (_who, "Store", INBOX_DATA)]
RULES += [
    ("user:boss", "Query", []), ("user:boss", "Retrieve", []), ("user:boss", "Echo", []),
    ("user:quinn", "Query", []),
    ("user:admin", "Admin", []),
    ("aet:FARSCU@10.254.254.254", "Query", []),  # an AE title bound to another address: never ours
]


# --------------------------------------------------------------------------------------------- DIMSE


def identity_item(principal: Principal):
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    item = UserIdentityNegotiation()
    item.user_identity_type = 2
    item.primary_field = principal.user.encode()
    item.secondary_field = principal.password.encode()
    item.positive_response_requested = False
    return item


def associate(server, principal: Principal, contexts: list[str], *, roles: list[str] = (), handlers=()):
    """A pynetdicom association as ``principal`` (with a user identity when it has a login)."""
    from pynetdicom import AE, build_role

    ae = AE(ae_title=principal.aet)
    ae.dimse_timeout = 10  # every answer here comes in well under a second: fail fast, not after 30 s
    for context in contexts:
        ae.add_requested_context(context, ExplicitVRLittleEndian)
    extended = [build_role(sop_class, scp_role=True) for sop_class in roles]
    if principal.user:
        extended.append(identity_item(principal))
    return ae.associate(server.host, server.dimse_port, ae_title=server.aet, ext_neg=extended,
                        evt_handlers=list(handlers))


def identifier(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def c_find(server, principal: Principal, keys: dict[str, Any], patient_root: bool = False) -> tuple[list[Dataset], int]:
    """Matches and the final status of a C-FIND by ``principal`` (pynetdicom)."""
    from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelFind)

    model = PatientRootQueryRetrieveInformationModelFind if patient_root else StudyRootQueryRetrieveInformationModelFind
    assoc = associate(server, principal, [model])
    assert assoc.is_established, f"association of {principal.label} refused"
    matches, final = [], None
    try:
        for status, answer in assoc.send_c_find(identifier(keys), model):
            if status and status.Status in (0xFF00, 0xFF01):
                matches.append(answer)
            elif status:
                final = int(status.Status)
    finally:
        assoc.release()
    return matches, final


def c_get(server, principal: Principal, keys: dict[str, Any]) -> tuple[set[str], int]:
    """SOP Instance UIDs received and the final status of a C-GET by ``principal`` (pynetdicom)."""
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    received: set[str] = set()

    def on_store(event):
        received.add(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = associate(server, principal, [StudyRootQueryRetrieveInformationModelGet, MRImageStorage, CTImageStorage],
                      roles=[MRImageStorage, CTImageStorage], handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established, f"association of {principal.label} refused"
    final = None
    try:
        for status, _ in assoc.send_c_get(identifier(keys), StudyRootQueryRetrieveInformationModelGet):
            if status and status.Status not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return received, final


def c_move(server, principal: Principal, keys: dict[str, Any], destination: str) -> int:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    assoc = associate(server, principal, [StudyRootQueryRetrieveInformationModelMove])
    assert assoc.is_established, f"association of {principal.label} refused"
    final = None
    try:
        for status, _ in assoc.send_c_move(identifier(keys), destination, StudyRootQueryRetrieveInformationModelMove):
            if status and status.Status not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return final


def association_accepted(server, principal: Principal) -> bool:
    from pynetdicom.sop_class import Verification

    assoc = associate(server, principal, [Verification])
    accepted = assoc.is_established
    if accepted:
        assoc.release()
    return accepted


def dcmtk(tool: str, server, principal: Principal, *options: str, files: list[Path] = (),
          check: bool = False) -> subprocess.CompletedProcess:
    """A DCMTK tool calling as ``principal``'s AE title (and, for storescu, with its login)."""
    command = [require_tool(tool), "-aet", principal.aet, "-aec", server.aet, *options]
    if principal.user and tool == "storescu":
        command += ["-usr", principal.user, "-pwd", principal.password]
    # DCMTK wants the peer and port before the files.
    return run(command + [server.host, str(server.dimse_port), *map(str, files)], timeout=60, check=check)


def findscu(server, principal: Principal, keys: dict[str, str], out_dir: Path) -> list[Dataset]:
    """findscu (study root), its answers extracted to files (-X) and read back."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["-S", "-X", "-od", str(out_dir)]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value is not None else key]
    dcmtk("findscu", server, principal, *args, check=True)
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 30) -> HttpAnswer:
    """A plain urllib request; error statuses are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpAnswer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def dicomweb_client_as(server, principal: Principal, tokens: dict[str, str]):
    """dicomweb-client with a requests session that logs in as ``principal``, as its users configure it."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    if principal.token_of:
        session = create_session()
        session.headers.update(principal.http_headers(tokens))
    elif principal.user:
        session = create_session_from_user_pass(principal.user, principal.password)
    else:
        session = create_session()
    return DICOMwebClient(server.dicomweb_url, session=session)


def multipart_parts(answer: HttpAnswer) -> int:
    """How many parts a multipart/related answer holds."""
    content_type = answer.headers["content-type"]
    boundary = [p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")][0]
    return answer.body.count(b"--" + boundary.encode() + b"\r\n")


def stow_body(paths: list[Path]) -> tuple[bytes, str]:
    boundary = "matrix-boundary-7d1f"
    parts = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n"
                     for p in paths)
    return parts + b"--" + boundary.encode() + b"--\r\n", f'multipart/related; type="application/dicom"; boundary={boundary}'


def dopamine_cli(server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The `dopamine` command on the server's archive (same data folder and configuration)."""
    from support import dopamine_command

    command = dopamine_command(*args, "--data-dir", str(server.data_dir), "--config", str(server.extra["config"]))
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=True)
