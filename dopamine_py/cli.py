"""The `dopamine` command."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import sys
import tempfile
import threading
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from .config import FLAGS, ConfigError, Settings, load_settings


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--data-dir", metavar="DIR", help="folder of the embedded store (default ./dopamine-data)")
    parser.add_argument("--mongodb-uri", metavar="URI", help="store in MongoDB instead of the embedded store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dopamine", description="Dopamine-py, a DICOM archive for research.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the archive (DIMSE and DICOMweb)")
    _add_store_options(serve)
    serve.add_argument("--aet", help="AE title of the archive (default DOPAMINE)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--dimse-port", type=int, metavar="P", help="DIMSE port (default 11112)")
    serve.add_argument("--http-port", type=int, metavar="P", help="DICOMweb port (default 8080)")
    serve.set_defaults(run=cmd_serve)

    imp = commands.add_parser("import", help="store DICOM files, folders and zip files")
    _add_store_options(imp)
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(run=cmd_import)

    peer = commands.add_parser("peer", help="manage the peer table (C-MOVE destinations)")
    peer_commands = peer.add_subparsers(dest="peer_command", required=True)
    add = peer_commands.add_parser("add", help="add or update a peer")
    _add_store_options(add)
    add.add_argument("aet")
    add.add_argument("host")
    add.add_argument("port", type=int)
    add.set_defaults(run=cmd_peer_add)
    lst = peer_commands.add_parser("list", help="list peers")
    _add_store_options(lst)
    lst.set_defaults(run=cmd_peer_list)
    rm = peer_commands.add_parser("remove", help="remove a peer")
    _add_store_options(rm)
    rm.add_argument("aet")
    rm.set_defaults(run=cmd_peer_remove)

    from acl.cli import register as register_access_commands

    register_access_commands(commands, _add_store_options)

    _add_routing_commands(commands)

    bruker = commands.add_parser("bruker", help="Bruker ParaVision data sets")
    bruker_commands = bruker.add_subparsers(dest="bruker_command", required=True)
    convert = bruker_commands.add_parser("convert", help="convert to DICOM files (nothing is stored)")
    convert.add_argument("path", help="study, scan or reconstruction folder, or a zip of one")
    convert.add_argument("outdir")
    convert.add_argument("--enhanced", action="store_true", help="one Enhanced MR instance per reconstruction")
    convert.add_argument("--config", metavar="FILE", help=argparse.SUPPRESS)
    convert.set_defaults(run=cmd_bruker_convert)
    bimport = bruker_commands.add_parser("import", help="convert and store in the archive")
    _add_store_options(bimport)
    bimport.add_argument("path", help="study, scan or reconstruction folder, or a zip of one")
    bimport.add_argument("--enhanced", action="store_true", help="one Enhanced MR instance per reconstruction")
    bimport.set_defaults(run=cmd_bruker_import)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {option: getattr(args, flag, None) for flag, option in FLAGS.items()}
    return load_settings(args.config, overrides)


def open_archive(settings: Settings):
    from .assembly import open_archive as assemble

    return assemble(settings)


def close_archive(archive) -> None:
    from .assembly import close_archive as close

    close(archive)


@contextlib.contextmanager
def opened_archive(settings: Settings):
    archive = open_archive(settings)
    try:
        yield archive
    finally:
        close_archive(archive)


def open_access_control(archive, settings: Settings):
    from acl import AccessControl, AclStore

    return AccessControl.from_settings(settings, AclStore.for_backend(archive.backend))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"dopamine: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings["log.level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.command != "serve":
        # Batch commands print their own summary; a log line per stored instance would drown it.
        logging.getLogger("dopamine.archive").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return args.run(args, settings) or 0
    except OSError as exc:  # an unreachable database, an unwritable data folder: say it, no traceback
        print(f"dopamine: {exc}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------------------- serve


def cmd_serve(args, settings: Settings) -> int:
    from .dimse import DimseServer

    log = logging.getLogger("dopamine")
    archive = open_archive(settings)
    access = open_access_control(archive, settings)
    server = DimseServer(
        archive,
        access,
        aet=settings["server.aet"],
        host=settings["server.host"],
        port=settings["server.dimse_port"],
        incoming_dir=settings.data_dir / "incoming",
        match_options=settings.match_options,
        max_associations=settings["server.max_associations"],
        network_timeout=settings["server.network_timeout"],
    )
    try:
        server.start()
    except OSError as exc:
        print(f"dopamine: cannot listen on {settings['server.host']}:{settings['server.dimse_port']}: {exc}", file=sys.stderr)
        return 1
    http = _start_http(archive, settings, access)
    if http is None:
        server.stop()
        return 1
    log.info("storage: %s (%s)", archive.backend.name,
             settings["storage.mongodb_uri"] or settings.data_dir.resolve())
    archive.routing.forward.start()
    active = [b for b in archive.routing.router.registry.bindings() if b["active"]]
    log.info("routing: %s", ", ".join(f"{b['name']} v{b['version']}" for b in active) or "no active rule set")
    if access.enforce:
        from acl import first_run_advice

        advice = first_run_advice(access.store)
        if advice:
            print(advice, flush=True)
    else:
        log.warning("ACCESS CONTROL IS NOT ENFORCED (auth.enforce = false): every request is accepted")
    # What startup made (the DICOM dictionaries, pydicom, lxml, the web app: some 60,000 objects) lives as long
    # as the server: kept out of the collector's full passes, which walked all of it each time (about 25 ms,
    # triggered every few hundred routed instances by the objects routing's caches keep).
    gc.collect()
    gc.freeze()
    host = settings["server.host"]
    print(f"Dopamine-py ready: DIMSE {settings['server.aet']}@{host}:{settings['server.dimse_port']}, "
          f"DICOMweb http://{host}:{settings['server.http_port']}/dicom-web", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    http.should_exit = True
    server.stop()
    archive.routing.forward.stop()
    close_archive(archive)
    return 0


def _start_http(archive, settings: Settings, access):
    """Start uvicorn with the DICOMweb app in a thread; None (and a message) when it cannot listen."""
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from dicomweb.admin import create_admin_app
    from dicomweb.admin_bruker import bruker_routes
    from dicomweb.admin_routing import routing_routes
    from dicomweb.app import BASE_PATH, create_app

    app = Starlette(routes=[Mount(BASE_PATH, app=create_app(archive, settings, access)),
                            Mount("/admin", app=create_admin_app(
                                archive, settings, access,
                                extra_routes=routing_routes(archive) + bruker_routes(archive, settings.data_dir / "incoming")))])
    config = uvicorn.Config(app, host=settings["server.host"], port=settings["server.http_port"],
                            log_level="warning", lifespan="off")
    http = uvicorn.Server(config)
    thread = threading.Thread(target=http.run, name="http", daemon=True)
    thread.start()
    while not http.started and thread.is_alive():
        time.sleep(0.05)
    if not http.started:
        print(f"dopamine: cannot listen on {settings['server.host']}:{settings['server.http_port']} (HTTP)", file=sys.stderr)
        return None
    return http


# ------------------------------------------------------------------------------------------------ import


def _files(paths: list[str], scratch: Path) -> Iterator[tuple[str, Path]]:
    """(name shown to the user, file) for every file under the paths; zip members are extracted."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _files([str(child)], scratch)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for member in zf.infolist():
                    if member.is_dir():
                        continue
                    target = scratch / f"{len(list(scratch.iterdir()))}.dcm"
                    with zf.open(member) as src, open(target, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    yield f"{path}:{member.filename}", target
        else:
            yield str(path), path


def cmd_import(args, settings: Settings) -> int:
    from tqdm import tqdm

    from .archive import Source

    archive = open_archive(settings)
    counts: Counter[str] = Counter()
    failures: list[tuple[str, str]] = []
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        failures.append((p, "no such file or folder"))
    with tempfile.TemporaryDirectory(prefix="dopamine-import-") as scratch:
        files = _files([p for p in args.paths if p not in missing], Path(scratch))
        for name, path in tqdm(files, unit=" files", disable=args.quiet or not sys.stderr.isatty()):
            result = archive.store_file(path, Source(protocol="import"), take_ownership=path.parent == Path(scratch))
            counts[result.status] += 1
            if not result.ok:
                failures.append((name, result.reason or result.status))
    close_archive(archive)
    print(f"stored: {counts['stored']}, duplicates: {counts['duplicate']}, quarantined: {counts['quarantined']}, "
          f"rejected: {counts['rejected']}, failed: {counts['failed'] + len(missing)}")
    for name, reason in failures:
        print(f"  {name}: {reason}")
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------------- peers


def cmd_peer_add(args, settings: Settings) -> int:
    from .config import _aet, _port

    problem = _aet(args.aet) or _port(args.port)
    if problem:
        print(f"dopamine: peer: {problem}", file=sys.stderr)
        return 2
    with opened_archive(settings) as archive:
        archive.backend.put_peer(args.aet, args.host, args.port)
    print(f"peer {args.aet} = {args.host}:{args.port}")
    return 0


def cmd_peer_list(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        peers = archive.backend.list_peers()
    for peer in peers:
        print(f"{peer['aet']}\t{peer['host']}\t{peer['port']}")
    return 0


def cmd_peer_remove(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        removed = archive.backend.remove_peer(args.aet)
    if not removed:
        print(f"dopamine: no peer {args.aet}", file=sys.stderr)
        return 1
    print(f"removed {args.aet}")
    return 0


# ----------------------------------------------------------------------------------------------- routing


def _add_routing_commands(commands) -> None:
    rules = commands.add_parser("rules", help="routing rule sets: check, try, activate, list, history")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rule_commands.add_parser("check", help="validate a rule set file (errors with line numbers)")
    check.add_argument("file")
    check.set_defaults(run=cmd_rules_check, config=None)
    attempt = rule_commands.add_parser("try", help="dry run: what a rule set does to files, nothing stored")
    attempt.add_argument("file")
    attempt.add_argument("inputs", nargs="+", metavar="INPUT.dcm")
    attempt.add_argument("--config", metavar="FILE", help="for routing.secrets_file")
    attempt.set_defaults(run=cmd_rules_try)
    activate = rule_commands.add_parser("activate", help="store a rule set as a new version and make it active")
    _add_store_options(activate)
    activate.add_argument("file")
    activate.add_argument("--name", help="rule set name (default: the RuleSet's name attribute, else the file name)")
    activate.add_argument("--protocol", help="only for this input: dimse, stow, import, bruker (wildcards allowed)")
    activate.add_argument("--calling-aet", help="only for senders with this AE title (wildcards allowed)")
    activate.add_argument("--user", help="only for this authenticated user (wildcards allowed)")
    activate.add_argument("--comment")
    activate.set_defaults(run=cmd_rules_activate)
    deactivate = rule_commands.add_parser("deactivate", help="stop applying a rule set")
    _add_store_options(deactivate)
    deactivate.add_argument("name")
    deactivate.set_defaults(run=cmd_rules_deactivate)
    lst = rule_commands.add_parser("list", help="rule sets, their active version and inputs")
    _add_store_options(lst)
    lst.set_defaults(run=cmd_rules_list)
    history = rule_commands.add_parser("history", help="every version of a rule set")
    _add_store_options(history)
    history.add_argument("name")
    history.set_defaults(run=cmd_rules_history)
    provenance = rule_commands.add_parser("provenance", help="what the rules did to an instance, old values included")
    _add_store_options(provenance)
    provenance.add_argument("uid", metavar="SOP_INSTANCE_UID", help="as stored, or as received")
    provenance.set_defaults(run=cmd_rules_provenance)

    quarantine = commands.add_parser("quarantine", help="instances kept aside by routing rules")
    q_commands = quarantine.add_subparsers(dest="quarantine_command", required=True)
    q_list = q_commands.add_parser("list", help="what is in quarantine, and why")
    _add_store_options(q_list)
    q_list.set_defaults(run=cmd_quarantine_list)
    for name, handler, text in (("release", cmd_quarantine_release, "store it in the archive"),
                                ("discard", cmd_quarantine_discard, "delete it")):
        sub = q_commands.add_parser(name, help=text)
        _add_store_options(sub)
        sub.add_argument("uid", help="SOP Instance UID")
        sub.set_defaults(run=handler)

    forward = commands.add_parser("forward", help="the queue of instances forwarded to peers")
    f_commands = forward.add_subparsers(dest="forward_command", required=True)
    f_list = f_commands.add_parser("list", help="pending and failed forwards")
    _add_store_options(f_list)
    f_list.set_defaults(run=cmd_forward_list)
    f_retry = f_commands.add_parser("retry", help="retry the failed forwards now")
    _add_store_options(f_retry)
    f_retry.set_defaults(run=cmd_forward_retry)


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def cmd_rules_check(args, settings: Settings) -> int:
    from routing.cli import check_command

    return check_command(args.file, sys.stdout)


def cmd_rules_try(args, settings: Settings) -> int:
    from routing.cli import try_command

    from .assembly import load_secrets

    return try_command(args.file, args.inputs, sys.stdout, secrets=load_secrets(settings) or None)


def cmd_rules_activate(args, settings: Settings) -> int:
    from routing import RuleSetError

    from .router import Selector, table_files

    path = Path(args.file)
    try:
        xml = path.read_bytes()
    except OSError as exc:
        print(f"dopamine: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    name = args.name or _ruleset_name(xml) or path.stem
    with opened_archive(settings) as archive:
        try:
            version = archive.routing.router.registry.activate(
                name, xml, table_files(xml, path.parent), Selector(args.protocol, args.calling_aet, args.user),
                author=_actor(), comment=args.comment)
        except RuleSetError as exc:
            print(f"{path}: not activated; the active version (if any) stays:\n{exc}", file=sys.stderr)
            return 1
    print(f"rule set {name} version {version} is active")
    return 0


def _ruleset_name(xml: bytes) -> str | None:
    from lxml import etree

    try:
        return etree.fromstring(xml).get("name")
    except etree.XMLSyntaxError:
        return None


def cmd_rules_deactivate(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        done = archive.routing.router.registry.deactivate(args.name, author=_actor())
    print(f"rule set {args.name} deactivated" if done else f"dopamine: no active rule set {args.name}")
    return 0 if done else 1


def cmd_rules_list(args, settings: Settings) -> int:
    from .router import Selector

    with opened_archive(settings) as archive:
        for b in archive.routing.router.registry.bindings():
            selector = Selector(b.get("protocol"), b.get("calling_aet"), b.get("user")).describe()
            state = "active" if b["active"] else "inactive"
            print(f"{b['name']}\tversion {b['version']}\t{state}\t{selector}\t{b['changed_by']} {b['changed_at']}")
    return 0


def cmd_rules_history(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        versions = archive.routing.router.registry.history(args.name)
    for v in versions:
        print(f"version {v['version']}\t{v['at']}\t{v['author']}\t{v.get('comment') or ''}")
    return 0 if versions else 1


def cmd_rules_provenance(args, settings: Settings) -> int:
    from .router import describe_provenance, provenance_of

    with opened_archive(settings) as archive:
        records = provenance_of(archive.routing.records, args.uid)
    for record in records:
        print(describe_provenance(record))
    if not records:
        print(f"dopamine: no provenance for {args.uid} (no rule set changed or routed it)", file=sys.stderr)
    return 0 if records else 1


def cmd_quarantine_list(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        for entry in archive.quarantined():
            source = entry["source"]
            print(f"{entry['sop_instance_uid']}\t{entry['at']}\t{source['protocol']} "
                  f"{source.get('calling_aet') or ''}\t{entry['reason']}")
    return 0


def cmd_quarantine_release(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        try:
            result = archive.release(args.uid, _actor())
        except KeyError:
            print(f"dopamine: {args.uid} is not in quarantine", file=sys.stderr)
            return 1
    print(f"{args.uid}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    return 0 if result.ok else 1


def cmd_quarantine_discard(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        done = archive.discard(args.uid, _actor())
    print(f"{args.uid}: discarded" if done else f"dopamine: {args.uid} is not in quarantine")
    return 0 if done else 1


def cmd_forward_list(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        for item in archive.routing.forward.items():
            print(f"{item['sop_instance_uid']}\t{item['destination']}\t{item['state']}\t"
                  f"attempts {item['attempts']}\t{item.get('last_error') or ''}")
    return 0


def cmd_forward_retry(args, settings: Settings) -> int:
    with opened_archive(settings) as archive:
        count = archive.routing.forward.retry_failed()
    print(f"{count} failed forward(s) will be retried by the running server")
    return 0


# ------------------------------------------------------------------------------------------------ bruker


def cmd_bruker_convert(args, settings: Settings) -> int:
    from bruker.cli import convert_command

    return convert_command(args.path, args.outdir, enhanced=args.enhanced)


def cmd_bruker_import(args, settings: Settings) -> int:
    from bruker.cli import import_command

    with opened_archive(settings) as archive:
        return import_command(args.path, archive, enhanced=args.enhanced)


if __name__ == "__main__":
    sys.exit(main())
