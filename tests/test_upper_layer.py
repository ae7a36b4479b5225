"""Our association acceptor (dopamine_py/upper_layer/) against peers that break the protocol or push its
limits, with raw sockets: what DCMTK and pynetdicom clients never send. Each case ends by checking that
the archive still answers echoscu."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from dopamine_py.upper_layer import commands, pdu
from tests.dimse_client import dataset_bytes
from tests.factory import encode, make_dataset
from tests.support import require_tool, run, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("upper-layer") / "data")
    yield server
    server.stop()


def item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(called: str, contexts: list[tuple[int, str, list[str]]], *, version: int = 1,
                 application_context: str = pdu.APPLICATION_CONTEXT, max_length: int = 16384,
                 scp_roles: tuple[str, ...] = ()) -> bytes:
    body = struct.pack(">HH", version, 0) + called.encode().ljust(16) + b"RAWPEER".ljust(16) + bytes(32)
    body += item(0x10, application_context.encode())
    for context_id, abstract, syntaxes in contexts:
        body += item(0x20, bytes((context_id, 0, 0, 0)) + item(0x30, abstract.encode())
                     + b"".join(item(0x40, ts.encode()) for ts in syntaxes))
    roles = b"".join(item(0x54, struct.pack(">H", len(uid)) + uid.encode() + b"\0\1") for uid in scp_roles)
    body += item(0x50, item(0x51, struct.pack(">I", max_length)) + item(0x52, b"1.2.3.4") + roles)
    return struct.pack(">BBI", pdu.ASSOCIATE_RQ, 0, len(body)) + body


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.dimse_port), timeout=10)
    return sock


def read_pdu(sock) -> tuple[int, bytes]:
    return pdu.read_pdu(sock, 1 << 24)


def assert_still_serving(server) -> None:
    echo = run([require_tool("echoscu"), "-aec", server.aet, server.host, str(server.dimse_port)], check=False)
    assert echo.returncode == 0, f"the archive stopped answering C-ECHO:\n{echo.stderr}\n{server.log()[-2000:]}"


@contextlib.contextmanager
def raw_peer(server, contexts=None):
    """A connection (an established association when ``contexts`` are given); on leaving, the archive
    must still answer echoscu, whatever the peer did."""
    sock = established(server, contexts) if contexts else connect(server)
    try:
        yield sock
    finally:
        sock.close()
    assert_still_serving(server)


def established(server, contexts, scp_roles=()) -> socket.socket:
    sock = connect(server)
    sock.sendall(associate_rq(server.aet, contexts, scp_roles=scp_roles))
    kind, _ = read_pdu(sock)
    assert kind == pdu.ASSOCIATE_AC
    return sock


@pytest.mark.parametrize("request_bytes, reason", [
    (lambda aet: associate_rq(aet, [(1, Verification, [ExplicitVRLittleEndian])], application_context="1.2.3"),
     pdu.APPLICATION_CONTEXT_NOT_SUPPORTED),
    (lambda aet: associate_rq(aet, [(1, Verification, [ExplicitVRLittleEndian])], version=2),
     pdu.PROTOCOL_VERSION_NOT_SUPPORTED),
    (lambda aet: associate_rq("NOT-US", [(1, Verification, [ExplicitVRLittleEndian])]),
     pdu.CALLED_AE_NOT_RECOGNIZED),
], ids=["application-context", "protocol-version", "called-ae"])
def test_bad_association_requests_are_rejected_with_the_reason(server, request_bytes, reason):
    with raw_peer(server) as sock:
        sock.sendall(request_bytes(server.aet))
        kind, body = read_pdu(sock)
        assert kind == pdu.ASSOCIATE_RJ
        assert body[1] == pdu.REJECTED_PERMANENT and body[3] == reason


def test_ae_titles_padded_with_nuls_are_read_as_titles(server):
    """PS3.8 pads AE titles with spaces; some peers pad them with NULs, which are not part of the title."""
    request = bytearray(associate_rq(server.aet, [(1, Verification, [ExplicitVRLittleEndian])]))
    request[10:26] = server.aet.encode().ljust(16, b"\0")  # the called AE title, after the PDU and version
    request[26:42] = b"\0\0RAWPEER".ljust(16, b"\0")  # the calling one, NULs before it too
    with raw_peer(server) as sock:
        sock.sendall(bytes(request))
        kind, body = read_pdu(sock)
        assert kind == pdu.ASSOCIATE_AC, body
    assert pdu.parse_associate_request(bytes(request[6:])).calling_aet == "RAWPEER"


def test_garbage_instead_of_an_association_request_is_aborted(server):
    with raw_peer(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(100)
        assert data == b"" or data[0] == pdu.ABORT, data


def test_data_on_a_context_that_was_not_accepted_aborts(server):
    with raw_peer(server, [(1, Verification, [ExplicitVRLittleEndian])]) as sock:
        echo = commands.encode({commands.AFFECTED_SOP_CLASS: Verification, commands.COMMAND_FIELD: commands.C_ECHO_RQ,
                                commands.MESSAGE_ID: 1, commands.DATA_SET_TYPE: commands.NO_DATA_SET})
        sock.sendall(pdu.p_data(3, pdu.COMMAND | pdu.LAST_FRAGMENT, echo))
        kind, _ = read_pdu(sock)
        assert kind == pdu.ABORT


def test_rejected_contexts_say_why(server):
    sock = connect(server)
    try:
        sock.sendall(associate_rq(server.aet, [(1, "1.2.3.4.5.6", [ExplicitVRLittleEndian]),
                                               (3, CTImageStorage, ["1.2.3.999"]),
                                               (5, CTImageStorage, ["1.2.3.999", ExplicitVRLittleEndian])]))
        kind, body = read_pdu(sock)
        assert kind == pdu.ASSOCIATE_AC
        results = {}
        offset = 68
        while offset < len(body):
            kind, length = body[offset], struct.unpack_from(">H", body, offset + 2)[0]
            if kind == 0x21:
                results[body[offset + 4]] = body[offset + 6]
            offset += 4 + length
        assert results == {1: pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED, 3: pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                           5: pdu.ACCEPTANCE}
    finally:
        sock.close()


def test_a_data_set_in_tiny_fragments_is_stored_whole(server):
    """A C-STORE whose command and data set come in 100-byte PDVs, several per PDU."""
    ds = make_dataset()
    dataset = dataset_bytes(encode(ds))
    sock = established(server, [(1, str(ds.SOPClassUID), [ExplicitVRLittleEndian])])
    try:
        command = commands.encode({
            commands.AFFECTED_SOP_CLASS: str(ds.SOPClassUID), commands.COMMAND_FIELD: commands.C_STORE_RQ,
            commands.MESSAGE_ID: 7, commands.PRIORITY: 0, commands.DATA_SET_TYPE: commands.DATA_SET_PRESENT,
            commands.AFFECTED_SOP_INSTANCE: str(ds.SOPInstanceUID)})

        def pdvs(payload: bytes, flags: int) -> list[bytes]:
            pieces = [payload[i:i + 100] for i in range(0, len(payload), 100)]
            return [struct.pack(">IBB", len(p) + 2, 1, flags | (pdu.LAST_FRAGMENT if i == len(pieces) - 1 else 0)) + p
                    for i, p in enumerate(pieces)]

        items = pdvs(command, pdu.COMMAND) + pdvs(dataset, 0)
        for start in range(0, len(items), 3):
            body = b"".join(items[start:start + 3])
            sock.sendall(struct.pack(">BBI", pdu.P_DATA_TF, 0, len(body)) + body)
        kind, body = read_pdu(sock)
        assert kind == pdu.P_DATA_TF
        (_, _, fragment), = list(pdu.pdvs(body))
        response = commands.decode(bytes(fragment))
        assert response[commands.COMMAND_FIELD] == commands.C_STORE_RQ | commands.RESPONSE
        assert response[commands.RESPONDING_TO] == 7
        assert response[commands.STATUS] == 0x0000, response
        sock.sendall(struct.pack(">BBII", pdu.RELEASE_RQ, 0, 4, 0))
        kind, _ = read_pdu(sock)
        assert kind == pdu.RELEASE_RP
    finally:
        sock.close()
    found = run([require_tool("findscu"), "-S", "-aec", server.aet, "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", server.host, str(server.dimse_port)])
    assert "Find Response: 1 (Pending)" in found.stderr or "Received Find Response 1 (Pending)" in found.stderr, found.stderr


def store_on_context(sock, context_id: int, sop_class: str, ds) -> dict:
    dataset = dataset_bytes(encode(ds))
    command = commands.encode({
        commands.AFFECTED_SOP_CLASS: sop_class, commands.COMMAND_FIELD: commands.C_STORE_RQ,
        commands.MESSAGE_ID: 9, commands.PRIORITY: 0, commands.DATA_SET_TYPE: commands.DATA_SET_PRESENT,
        commands.AFFECTED_SOP_INSTANCE: str(ds.SOPInstanceUID)})
    sock.sendall(pdu.p_data(context_id, pdu.COMMAND | pdu.LAST_FRAGMENT, command)
                 + pdu.p_data(context_id, pdu.LAST_FRAGMENT, dataset))
    kind, body = read_pdu(sock)
    assert kind == pdu.P_DATA_TF
    (_, _, fragment), = list(pdu.pdvs(body))
    return commands.decode(bytes(fragment))


@pytest.mark.parametrize("side", [8, 1600], ids=["in-memory", "spilled-to-disk"])
def test_a_store_on_the_context_of_another_sop_class_is_refused(server, side):
    """A CT instance sent on the MR context: 0122H (SOP class not supported), nothing stored, and nothing
    left of it in the incoming folder (5 MB of pixels go through a file there)."""
    ds = make_dataset(modality="CT", rows=side, columns=side)
    sock = established(server, [(1, MRImageStorage, [ExplicitVRLittleEndian])])
    try:
        response = store_on_context(sock, 1, str(ds.SOPClassUID), ds)
        assert response[commands.STATUS] == 0x0122, response
        assert "presentation context" in response[commands.ERROR_COMMENT]
    finally:
        sock.close()
    found = run([require_tool("findscu"), "-S", "-aec", server.aet, "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", server.host, str(server.dimse_port)])
    assert "Pending" not in found.stderr, found.stderr
    assert not list((server.data_dir / "incoming").iterdir())


def test_peer_vanishing_mid_data_set_loses_nothing_else(server):
    ds = make_dataset(sop_uid=generate_uid())
    sock = established(server, [(1, str(ds.SOPClassUID), [ExplicitVRLittleEndian])])
    command = commands.encode({
        commands.AFFECTED_SOP_CLASS: str(ds.SOPClassUID), commands.COMMAND_FIELD: commands.C_STORE_RQ,
        commands.MESSAGE_ID: 1, commands.PRIORITY: 0, commands.DATA_SET_TYPE: commands.DATA_SET_PRESENT,
        commands.AFFECTED_SOP_INSTANCE: str(ds.SOPInstanceUID)})
    sock.sendall(pdu.p_data(1, pdu.COMMAND | pdu.LAST_FRAGMENT, command) + pdu.p_data(1, 0, b"\x08\x00" * 50))
    sock.close()
    assert_still_serving(server)


GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"


def start_c_get(server, study_uid: str) -> socket.socket:
    """A C-GET of a study (message ID 5) on an association where we take the CT storage SCP role."""
    sock = established(server, [(1, GET_MODEL, [ExplicitVRLittleEndian]), (3, CTImageStorage, [ExplicitVRLittleEndian])],
                       scp_roles=(CTImageStorage,))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, identifier)
    command = commands.encode({commands.AFFECTED_SOP_CLASS: GET_MODEL, commands.COMMAND_FIELD: commands.C_GET_RQ,
                               commands.MESSAGE_ID: 5, commands.PRIORITY: 0,
                               commands.DATA_SET_TYPE: commands.DATA_SET_PRESENT})
    sock.sendall(pdu.p_data(1, pdu.COMMAND | pdu.LAST_FRAGMENT, command)
                 + pdu.p_data(1, pdu.LAST_FRAGMENT, buffer.getvalue()))
    return sock


def next_command(sock) -> dict:
    """The command of the next message (its data set, if any, read and dropped)."""
    command = b""
    while True:
        kind, body = read_pdu(sock)
        assert kind == pdu.P_DATA_TF, kind
        for _, flags, fragment in pdu.pdvs(body):
            if flags & pdu.COMMAND:
                command += bytes(fragment)
            if flags & pdu.LAST_FRAGMENT:
                decoded = commands.decode(command) if command else None
                if decoded and (not flags & pdu.COMMAND or decoded[commands.DATA_SET_TYPE] == commands.NO_DATA_SET):
                    return decoded


def test_a_cancel_sent_before_a_sub_operations_response_stops_the_c_get(server):
    """The requestor cancels the C-GET, then answers the C-STORE it was being sent: the archive must
    see that cancel (read while it waited for the C-STORE response) and end with FE00H, not go on."""
    study = generate_uid()
    for number in range(5):
        ds = make_dataset(patient_id="GET-CANCEL", study_uid=study, instance_number=number + 1)
        with raw_peer(server, [(1, CTImageStorage, [ExplicitVRLittleEndian])]) as sock:
            assert store_on_context(sock, 1, CTImageStorage, ds)[commands.STATUS] == 0x0000
    sock = start_c_get(server, study)
    try:
        store = next_command(sock)
        assert store[commands.COMMAND_FIELD] == commands.C_STORE_RQ
        cancel = commands.encode({commands.COMMAND_FIELD: commands.C_CANCEL_RQ, commands.RESPONDING_TO: 5,
                                  commands.DATA_SET_TYPE: commands.NO_DATA_SET})
        answer = commands.encode({commands.AFFECTED_SOP_CLASS: CTImageStorage,
                                  commands.COMMAND_FIELD: commands.C_STORE_RQ | commands.RESPONSE,
                                  commands.RESPONDING_TO: store[commands.MESSAGE_ID],
                                  commands.DATA_SET_TYPE: commands.NO_DATA_SET, commands.STATUS: 0x0000,
                                  commands.AFFECTED_SOP_INSTANCE: store[commands.AFFECTED_SOP_INSTANCE]})
        sock.sendall(pdu.p_data(1, pdu.COMMAND | pdu.LAST_FRAGMENT, cancel)
                     + pdu.p_data(3, pdu.COMMAND | pdu.LAST_FRAGMENT, answer))
        responses = []
        while not responses or responses[-1][commands.STATUS] == 0xFF00:
            responses.append(next_command(sock))
            assert responses[-1][commands.COMMAND_FIELD] != commands.C_STORE_RQ, "a C-STORE sent after the cancel"
        assert responses[-1][commands.STATUS] == 0xFE00, responses
        assert responses[-1][commands.COMPLETED] == 1
    finally:
        sock.close()
    assert_still_serving(server)


def test_a_peer_aborting_during_a_c_get_ends_only_its_association(server):
    """The requestor aborts instead of answering the first C-STORE sub-operation: the archive drops that
    association quietly (no error traceback, no answer sent into the void) and serves the next one."""
    ds = make_dataset(patient_id="GET-ABORT")
    with raw_peer(server, [(1, CTImageStorage, [ExplicitVRLittleEndian])]) as sock:
        store_on_context(sock, 1, str(ds.SOPClassUID), ds)
    sock = start_c_get(server, ds.StudyInstanceUID)
    try:
        assert next_command(sock)[commands.COMMAND_FIELD] == commands.C_STORE_RQ
        sock.sendall(pdu.abort())
    finally:
        sock.close()
    assert_still_serving(server)
    assert "Traceback" not in server.log() and "failed" not in server.log(), server.log()[-3000:]
