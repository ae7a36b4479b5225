"""The ``acl``, ``user`` and ``token`` commands.

``register(commands, add_store_options)`` adds them to the ``dopamine`` parser; each sets
``run(args, settings)`` like the other commands. ``python -m acl.cli`` runs them on their own.
Passwords are read from standard input (``--password-stdin``) or prompted for on a terminal, never taken
from the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Callable, TextIO

from .model import AclError, Principal, Service, check_name, check_rule, parse_constraints
from .passwords import WeakPassword, check_password, hash_password
from .store import AclConflict, AclStore
from .tokens import new_token


class CommandError(Exception):
    pass


def cli_actor() -> str:
    """Who is changing rules from the command line, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (a container without /etc/passwd entry)
        return "cli:unknown"


def open_store(settings) -> AclStore:
    """The store beside the archive the settings name (its SQLite file, or its MongoDB database)."""
    from dopamine_py.storage import open_backend

    return AclStore.for_backend(open_backend(settings))


def register(commands, add_store_options: Callable[[argparse.ArgumentParser], None],
             opener: Callable[..., AclStore] = open_store) -> None:
    """Add ``acl``, ``user`` and ``token`` to ``commands`` (an argparse sub-parsers object)."""

    def leaf(group, name: str, help: str, handler) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help)
        add_store_options(parser)
        parser.set_defaults(run=lambda args, settings: _run(handler, args, opener(settings)), handler=handler)
        return parser

    acl = commands.add_parser("acl", help="access rules: who may use which service on which data sets")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True)
    add = leaf(acl_commands, "add", "allow PRINCIPAL to use SERVICE (on data sets matching --match keys)", acl_add)
    add.add_argument("principal", help="user:NAME, group:NAME, aet:AETITLE, aet:AETITLE@HOST, anonymous or *")
    add.add_argument("service", help=", ".join(s.value for s in Service))
    add.add_argument("--match", action="append", default=[], metavar="KEYWORD=VALUE",
                     help="DICOM matching key, as in C-FIND (repeat: all must match)")
    leaf(acl_commands, "list", "list the rules", acl_list)
    remove = leaf(acl_commands, "remove", "remove a rule", acl_remove)
    remove.add_argument("id", type=int)
    audit = leaf(acl_commands, "audit", "show the latest changes to rules, users and tokens", acl_audit)
    audit.add_argument("--limit", type=int, default=50)

    user = commands.add_parser("user", help="local users (names, password hashes and groups in the database)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    uadd = leaf(user_commands, "add", "create a user", user_add)
    uadd.add_argument("name")
    uadd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    uadd.add_argument("--group", action="append", default=[], metavar="GROUP", help="member of GROUP (repeat)")
    leaf(user_commands, "list", "list users and their groups", user_list)
    uremove = leaf(user_commands, "remove", "remove a user and revoke its tokens", user_remove)
    uremove.add_argument("name")
    passwd = leaf(user_commands, "passwd", "set a user's password", user_passwd)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    groups = leaf(user_commands, "groups", "set a user's groups (none given: no group)", user_groups)
    groups.add_argument("name")
    groups.add_argument("groups", nargs="*", metavar="GROUP")

    token = commands.add_parser("token", help="API tokens for DICOMweb (Bearer) and scripts")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = leaf(token_commands, "create", "create a token for USER (printed once)", token_create)
    create.add_argument("user")
    create.add_argument("--label", default="", help="what the token is for")
    create.add_argument("--days", type=int, default=None, help="valid for this many days (default: until revoked)")
    tlist = leaf(token_commands, "list", "list tokens (never their secrets)", token_list)
    tlist.add_argument("user", nargs="?")
    revoke = leaf(token_commands, "revoke", "revoke a token", token_revoke)
    revoke.add_argument("id")


def _run(handler, args, store: AclStore, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    try:
        handler(args, store, stdin or sys.stdin, stdout or sys.stdout)
    except (AclError, AclConflict, WeakPassword, CommandError) as exc:
        print(f"dopamine: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


# ------------------------------------------------------------------------------------------------- rules


def acl_add(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    principal = Principal.parse(args.principal)
    service = Service.parse(args.service)
    constraints = parse_constraints(args.match)
    check_rule(principal, service, constraints)
    rule = store.add_rule(principal, service, constraints, cli_actor())
    print(f"added rule {rule.describe()}", file=out)


def acl_list(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    rules = store.list_rules()
    if not rules:
        print("no rules: everything is denied", file=out)
    for rule in rules:
        print(rule.describe(), file=out)


def acl_remove(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    rule = store.remove_rule(args.id, cli_actor())
    print(f"removed rule {rule.describe()}", file=out)


def acl_audit(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    for entry in store.audit_entries(args.limit):
        detail = " ".join(f"{k}={v}" for k, v in sorted(entry.detail.items()))
        print(f"{entry.at} {entry.actor} {entry.action} {detail}", file=out)


# ------------------------------------------------------------------------------------------------- users


def read_password(args, stdin: TextIO) -> str:
    if args.password_stdin:
        password = stdin.readline().rstrip("\r\n")
    elif stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        raise CommandError("give the password on standard input with --password-stdin")
    check_password(password)
    return password


def user_add(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    name = check_name(args.name)
    groups = frozenset(check_name(g, "group name") for g in args.group)
    if store.get_user(name) is not None:
        raise AclConflict(f"user {name!r} already exists (change its password with `user passwd`)")
    store.add_user(name, hash_password(read_password(args, stdin)), groups, cli_actor())
    print(f"added user {name}" + (f" in groups {', '.join(sorted(groups))}" if groups else ""), file=out)


def user_list(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    users = store.list_users()
    if not users:
        print("no local users", file=out)
    for user in users:
        print(f"{user.name}\tgroups: {', '.join(sorted(user.groups)) or '-'}\tsince {user.created_at}", file=out)


def user_remove(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    store.remove_user(args.name, cli_actor())
    print(f"removed user {args.name} and its tokens (rules naming user:{args.name} stay: see `acl list`)", file=out)


def user_passwd(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    if store.get_user(args.name) is None:
        raise AclConflict(f"no user {args.name!r}")
    store.set_password(args.name, hash_password(read_password(args, stdin)), cli_actor())
    print(f"password of {args.name} changed", file=out)


def user_groups(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    groups = frozenset(check_name(g, "group name") for g in args.groups)
    store.set_groups(args.name, groups, cli_actor())
    print(f"groups of {args.name}: {', '.join(sorted(groups)) or '-'}", file=out)


# ------------------------------------------------------------------------------------------------ tokens


def token_create(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    user = check_name(args.user)
    if args.days is not None and args.days <= 0:
        raise CommandError("--days must be 1 or more")
    if store.get_user(user) is None:
        print(f"note: {user!r} is not a local user; the token works only while LDAP knows {user!r}", file=sys.stderr)
    text, record = new_token(user, args.label, args.days)
    store.add_token(record, cli_actor())
    print(text, file=out)
    expiry = f"expires {record.expires_at}" if record.expires_at else "valid until revoked"
    print(f"token {record.id} for {user}, {expiry}; it is shown only now: keep it safe", file=sys.stderr)


def token_list(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    tokens = store.list_tokens(args.user)
    if not tokens:
        print("no tokens", file=out)
    for t in tokens:
        print(f"{t.id}\t{t.user}\t{t.label or '-'}\tcreated {t.created_at}\texpires {t.expires_at or 'never'}", file=out)


def token_revoke(args, store: AclStore, stdin: TextIO, out: TextIO) -> None:
    record = store.revoke_token(args.id, cli_actor())
    print(f"revoked token {record.id} of {record.user}", file=out)


# ---------------------------------------------------------------------------------------------- stand-alone


def build_parser() -> argparse.ArgumentParser:
    def store_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
        parser.add_argument("--data-dir", metavar="DIR", help="folder of the embedded store (default ./dopamine-data)")
        parser.add_argument("--mongodb-uri", metavar="URI", help="the archive's MongoDB instead of the embedded store")

    parser = argparse.ArgumentParser(prog="dopamine", description="Access control of Dopamine-py.")
    register(parser.add_subparsers(dest="command", required=True), store_options)
    return parser


def run_with_store(argv: list[str], store: AclStore, stdin: TextIO | None = None,
                   stdout: TextIO | None = None) -> int:
    """Run one command on an open store (tests, and callers that already hold the store); the store is closed."""
    args = build_parser().parse_args(argv)
    return _run(args.handler, args, store, stdin, stdout)


def main(argv: list[str] | None = None) -> int:
    from dopamine_py.config import ConfigError, load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, {"data_dir": args.data_dir, "storage.mongodb_uri": args.mongodb_uri})
    except ConfigError as exc:
        print(f"dopamine: configuration error: {exc}", file=sys.stderr)
        return 2
    return args.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
