"""Configuration: a TOML file, overridden by command-line flags.

Every option is declared once in ``OPTIONS``; the loader validates against it (unknown keys and wrong
types are errors that name the key) and ``docs/configuration.md`` documents each one (a test checks).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .document import DocumentOptions, UnknownAttribute, parse_tag
from .matching import MatchOptions
from .storage.base import DuplicatePolicy

DEFAULT_INDEXED_ATTRIBUTES = [
    "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
    "SeriesNumber", "SeriesDescription", "SeriesDate", "BodyPartExamined", "ProtocolName",
    "InstanceNumber", "ContentDate",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass(frozen=True)
class Option:
    key: str  # "section.name", or "name" at the top level
    kind: type | tuple
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns an error message, or None


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port from 1 to 65535"


def _aet(value: str) -> str | None:
    if not 1 <= len(value) <= 16 or "\\" in value or not value.isascii() or value.strip() != value:
        return "must be an AE title: 1 to 16 ASCII characters, no backslash, no leading or trailing space"
    return None


def _policy(value: str) -> str | None:
    allowed = [p.value for p in DuplicatePolicy]
    return None if value in allowed else f"must be one of {', '.join(allowed)}"


def _attributes(value: list) -> str | None:
    for item in value:
        if not isinstance(item, str):
            return "must be a list of keywords or tags (strings)"
        try:
            parse_tag(item)
        except UnknownAttribute as exc:
            return str(exc)
    return None


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _log_level(value: str) -> str | None:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    return None if value.upper() in levels else f"must be one of {', '.join(levels)}"


OPTIONS = [
    Option("data_dir", str, "./dopamine-data", "Folder of the embedded store (and of received files in transit)."),
    Option("server.host", str, "127.0.0.1", "Address the DIMSE and HTTP servers listen on."),
    Option("server.aet", str, "DOPAMINE", "AE title of the archive; associations calling another title are rejected.", _aet),
    Option("server.dimse_port", int, 11112, "DIMSE (DICOM upper layer) port.", _port),
    Option("server.http_port", int, 8080, "HTTP port of DICOMweb.", _port),
    Option("server.max_associations", int, 32, "Associations served at once; more are rejected (busy).", _positive),
    Option("server.network_timeout", int, 60, "Seconds of silence after which an association is aborted.", _positive),
    Option("storage.mongodb_uri", str, "", "When set, MongoDB holds the archive instead of the embedded store."),
    Option("storage.mongodb_database", str, "dopamine", "MongoDB database name."),
    Option("storage.duplicate_policy", str, "keep-first",
           "What a second instance with a stored SOP Instance UID does: keep-first, replace or reject.", _policy),
    Option("storage.indexed_attributes", list, DEFAULT_INDEXED_ATTRIBUTES,
           "Attributes (keywords or tags) indexed for fast matching, besides the patient, study, series and "
           "instance keys, Modality and SOP Class UID, which always are.", _attributes),
    Option("document.bulk_data_threshold", int, 1024,
           "Binary values longer than this (bytes) are kept only in the original, not in the queryable document.",
           _non_negative),
    Option("document.exclude_attributes", list, [],
           "Attributes (keywords or tags) left out of the queryable document (they stay in the original).", _attributes),
    Option("document.include_private", bool, True, "Whether private attributes are copied into the queryable document."),
    Option("matching.case_insensitive_person_names", bool, False,
           "C-FIND matches person names without regard to case (QIDO-RS asks with fuzzymatching=true)."),
    Option("matching.combine_date_time", bool, True,
           "A date range with a time range on its paired attribute (StudyDate/StudyTime, ...) is one interval."),
    Option("dicomweb.cors_allow_origins", list, [],
           "Origins allowed to call DICOMweb from a browser (viewers); [\"*\"] allows any."),
    Option("dicomweb.max_results", int, 1000,
           "Most results one QIDO-RS response carries; a larger limit is cut to it, with a Warning header.", _positive),
    Option("dicomweb.gzip_minimum_size", int, 1024,
           "JSON and XML responses at least this large are gzip-compressed for clients that accept it.", _non_negative),
    Option("auth.enforce", bool, True,
           "Access rules are enforced: anything no rule allows is denied (`dopamine acl add`). "
           "false lets every request through, for a closed lab network only."),
    Option("auth.local_users", bool, True, "Users kept in the archive's database (`dopamine user add`) may log in."),
    Option("auth.dimse_require_user_identity", bool, False,
           "DIMSE requests from associations that negotiated no user identity are refused, whatever the rules."),
    Option("auth.dimse_trust_username_only", bool, False,
           "A DIMSE user identity of type 1 (a user name without password) is believed, for known users."),
    Option("auth.realm", str, "Dopamine-py", "Realm named in HTTP authentication challenges (WWW-Authenticate)."),
    Option("auth.throttle_free_failures", int, 5,
           "Failed logins allowed for one user name from one address before each further try must wait.", _positive),
    Option("auth.throttle_base_seconds", int, 1,
           "First wait after too many failed logins; it doubles with each further failure.", _positive),
    Option("auth.throttle_max_seconds", int, 300, "Longest wait imposed after failed logins.", _positive),
    Option("ldap.url", str, "", "LDAP server (ldap://host:389 or ldaps://host:636); empty: no LDAP."),
    Option("ldap.start_tls", bool, False, "Upgrade the ldap:// connection with StartTLS before binding."),
    Option("ldap.ca_file", str, "", "CA certificates (PEM) that sign the LDAP server's certificate; empty: the system's."),
    Option("ldap.user_dn_template", str, "",
           "DN to bind as, with {username}, e.g. uid={username},ou=people,dc=lab,dc=org; empty: search for it."),
    Option("ldap.bind_dn", str, "", "Service account that searches for users and groups; empty: anonymous search."),
    Option("ldap.bind_password", str, "", "Password of ldap.bind_dn."),
    Option("ldap.user_search_base", str, "", "Where to search for a user's entry when there is no DN template."),
    Option("ldap.user_search_filter", str, "(uid={username})", "Filter that finds a user's entry ({username})."),
    Option("ldap.username_attribute", str, "uid",
           "Attribute holding the user name as the directory spells it (rules name users that way)."),
    Option("ldap.group_search_base", str, "", "Where to search for a user's groups; empty: LDAP users have no group."),
    Option("ldap.group_search_filter", str, "(member={dn})",
           "Filter that finds a user's groups ({dn}: the user's DN, {username}), e.g. (memberUid={username}) for posixGroup."),
    Option("ldap.group_name_attribute", str, "cn", "Attribute of a group entry that names it in rules (group:NAME)."),
    Option("ldap.timeout", int, 10, "Seconds to wait for the LDAP server.", _positive),
    Option("routing.on_error", str, "reject",
           "What becomes of a data set on which a routing rule fails: reject (the sender gets a failure) or "
           "quarantine (kept aside as received).", lambda v: None if v in ("reject", "quarantine") else "must be reject or quarantine"),
    Option("routing.keep_original_values", bool, True,
           "Whether provenance records keep the values routing rules changed (readable by admins only)."),
    Option("routing.secrets_file", str, "",
           "TOML file of the keys keyed actions use (name = \"key\"), e.g. deidentification; kept out of rule files."),
    Option("forward.retry_first_seconds", int, 5, "Delay before the first retry of a failed forward; it doubles after each.", _positive),
    Option("forward.max_attempts", int, 50, "Attempts before a forward is marked failed (it stays listed until retried).", _positive),
    Option("log.level", str, "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.", _log_level),
]
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}

# Command-line flags of `dopamine serve` and the option each one sets.
FLAGS = {
    "data_dir": "data_dir",
    "aet": "server.aet",
    "host": "server.host",
    "dimse_port": "server.dimse_port",
    "http_port": "server.http_port",
    "mongodb_uri": "storage.mongodb_uri",
}


class Settings:
    """Validated settings; read an option as ``settings["server.aet"]`` or through the properties."""

    def __init__(self, values: dict[str, Any], origin: str = "defaults") -> None:
        self.values = values
        self.origin = origin

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data_dir"])

    @property
    def duplicate_policy(self) -> DuplicatePolicy:
        return DuplicatePolicy(self.values["storage.duplicate_policy"])

    @property
    def document_options(self) -> DocumentOptions:
        return DocumentOptions(
            bulk_data_threshold=self.values["document.bulk_data_threshold"],
            exclude=frozenset(parse_tag(k) for k in self.values["document.exclude_attributes"]),
            include_private=self.values["document.include_private"],
        )

    @property
    def match_options(self) -> MatchOptions:
        return MatchOptions(
            fold_person_names=self.values["matching.case_insensitive_person_names"],
            combine_datetime=self.values["matching.combine_date_time"],
        )


def _flatten(table: dict[str, Any], origin: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            if key not in {k.split(".")[0] for k in OPTIONS_BY_KEY if "." in k}:
                raise ConfigError(f"{origin}: unknown section [{key}]")
            flat.update(_flatten(value, origin, f"{key}."))
        else:
            flat[key] = value
    return flat


def _validate(key: str, value: Any, origin: str) -> Any:
    option = OPTIONS_BY_KEY.get(key)
    if option is None:
        known = ", ".join(sorted(OPTIONS_BY_KEY))
        raise ConfigError(f"{origin}: unknown key '{key}' (known keys: {known})")
    kind = option.kind
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{origin}: key '{key}' must be an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{origin}: key '{key}' must be a {kind.__name__}, got {value!r}")
    if option.check:
        problem = option.check(value)
        if problem:
            raise ConfigError(f"{origin}: key '{key}' {problem} (got {value!r})")
    return value


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the TOML file, then flags (``overrides`` maps option keys to values; None is unset)."""
    values = {o.key: o.default for o in OPTIONS}
    origin = "defaults"
    if config_file:
        path = Path(config_file)
        origin = str(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for key, value in _flatten(table, origin).items():
            values[key] = _validate(key, value, origin)
        if "data_dir" in table and not Path(values["data_dir"]).is_absolute():
            # Relative to the file, so that a configuration means the same from any working directory.
            values["data_dir"] = str((path.parent / values["data_dir"]).resolve())
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _validate(key, value, "command line")
    return Settings(values, origin)


def options_markdown() -> str:
    """The table of options in docs/configuration.md (a test keeps the document equal to this)."""
    flags = {option: flag for flag, option in FLAGS.items()}
    lines = ["| key | type | default | flag | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        default = repr(o.default).replace("'", '"') if not isinstance(o.default, bool) else str(o.default).lower()
        if isinstance(o.default, list) and len(default) > 40:
            default = "see below"
        flag = f"`--{flags[o.key].replace('_', '-')}`" if o.key in flags else ""
        lines.append(f"| `{o.key}` | {o.kind.__name__} | `{default}` | {flag} | {o.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_markdown(), end="")
