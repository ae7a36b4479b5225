"""A real OpenLDAP server for the LDAP tests: slapd on 127.0.0.1 (free ports, plain+StartTLS and LDAPS),
an mdb database in a temporary folder, a throwaway CA and server certificate, a small lab directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support import free_port, require_tool

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=svc-dopamine,{SUFFIX}"
SERVICE_PASSWORD = "svc-secret-42"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"

# name -> (entry DN, password). carol lives one level deeper: a DN template for ou=people misses her,
# a search finds her.
USERS = {
    "alice": (f"uid=alice,{PEOPLE}", "alice-pass-1"),
    "bob": (f"uid=bob,{PEOPLE}", "bob-pass-22"),
    "carol": (f"uid=carol,ou=students,{PEOPLE}", "carol-pass-333"),
}
# group -> members
DIRECTORY_GROUPS = {
    "radiology": ["alice"],
    "mri-physics": ["alice", "carol"],
}


def _directory_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example Lab\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=students,{PEOPLE}\nobjectClass: organizationalUnit\nou: students\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: svc-dopamine\nuserPassword: {SERVICE_PASSWORD}\n",
    ]
    for uid, (dn, password) in USERS.items():
        entries.append(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\nsn: {uid.title()}\n"
                       f"userPassword: {password}\n")
    for group, members in DIRECTORY_GROUPS.items():
        lines = "".join(f"member: {USERS[m][0]}\n" for m in members)
        entries.append(f"dn: cn={group},{GROUPS}\nobjectClass: groupOfNames\ncn: {group}\n{lines}")
    return "\n".join(entries)


def _slapd_conf(folder: Path, tls: dict[str, Path]) -> str:
    # Passwords can only be used to bind (by anonymous auth), never read; everything else is readable,
    # which is what anonymous search (search-then-bind without a service account) needs.
    return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {folder}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {tls['ca']}
TLSCertificateFile {tls['cert']}
TLSCertificateKeyFile {tls['key']}
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {folder}/db
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by * read
"""


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it; plus an unrelated CA (the wrong one)."""
    openssl = require_tool("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
            "-subj", f"/CN=Dopamine test {ca}")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    return {"ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem",
            "cert": folder / "server.pem", "key": folder / "server.key"}


@dataclass
class Slapd:
    process: subprocess.Popen
    port: int
    tls_port: int
    certificates: dict[str, Path]
    log_path: Path

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _slapd_path() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    return "/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else require_tool("slapd")


def start_slapd(folder: Path, timeout: float = 20) -> Slapd:
    slapd = _slapd_path()
    ldapadd = require_tool("ldapadd")
    if not os.path.exists("/etc/ldap/schema/inetorgperson.schema"):
        import pytest

        pytest.fail("slapd's schema files are missing (/etc/ldap/schema): `make test` installs Debian slapd", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir(exist_ok=True)
    certificates = make_certificates(folder)
    conf = folder / "slapd.conf"
    conf.write_text(_slapd_conf(folder, certificates))
    port, tls_port = free_port(), free_port()
    log_path = folder / "slapd.log"
    with open(log_path, "wb") as log:
        # -d keeps slapd in the foreground (so the test owns the process); level 0 logs nothing but errors.
        process = subprocess.Popen([slapd, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/",
                                    "-d", "0"], stdout=log, stderr=subprocess.STDOUT)
    server = Slapd(process, port, tls_port, certificates, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited with {process.returncode}:\n{server.log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"slapd did not listen within {timeout}s:\n{server.log()}")
            time.sleep(0.05)
    ldif = folder / "directory.ldif"
    ldif.write_text(_directory_ldif())
    added = subprocess.run([ldapadd, "-x", "-H", server.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f", str(ldif)],
                           capture_output=True, text=True, timeout=30)
    if added.returncode != 0:
        server.stop()
        raise RuntimeError(f"loading the test directory failed:\n{added.stdout}\n{added.stderr}\n{server.log()}")
    return server


def cleanup(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
