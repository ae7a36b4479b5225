"""Generate rules/ps3.15-basic-profile.json from the machine-readable PS3.15 Table E.1-1.

The product reads only the generated file; this script is run by a developer when the standard's
edition changes, and a test checks that the committed file equals a fresh generation.

    python -m routing.generate_profile [path/to/dicom-standard-dir] [output.json]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE_DIR = REPO.parent / "shared" / "data" / "dicom-standard"
OUTPUT = REPO / "rules" / "ps3.15-basic-profile.json"

# Column of the table -> attribute of <Deidentify> (and option name in the generated file).
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retainSafePrivate",
    "rtnUIDsOpt": "retainUIDs",
    "rtnDevIdOpt": "retainDeviceIdentity",
    "rtnInstIdOpt": "retainInstitutionIdentity",
    "rtnPatCharsOpt": "retainPatientCharacteristics",
    "rtnLongFullDatesOpt": "retainLongitudinalFullDates",
    "rtnLongModifDatesOpt": "retainLongitudinalModifiedDates",
    "cleanDescOpt": "cleanDescriptors",
    "cleanStructContOpt": "cleanStructuredContent",
    "cleanGraphOpt": "cleanGraphics",
}


def generate(source_dir: Path) -> str:
    rows = json.loads((source_dir / "confidentiality_profile_attributes.json").read_text("utf-8"))
    source_note = (source_dir / "SOURCE.md").read_text("utf-8")
    edition = re.search(r"edition (\d{4}[a-z])", source_note)
    origin = re.search(r"repository ([\w./-]+) \(commit (\w+), ([\d-]+)\)", source_note)
    if not edition or not origin:
        raise SystemExit(f"{source_dir / 'SOURCE.md'}: cannot find the edition and origin of the table")
    license_text = (source_dir / "LICENSE.txt").read_text("utf-8").strip()
    out_rows = []
    for row in rows:
        entry = {"tag": row["tag"], "name": row["name"], "basic": row["basicProfile"]}
        for column, option in OPTION_COLUMNS.items():
            if row.get(column):
                entry[option] = row[column]
        out_rows.append(entry)
    document = {
        "title": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": edition.group(1),
        "source": f"{origin.group(1)} commit {origin.group(2)} ({origin.group(3)}), "
                  "confidentiality_profile_attributes.json",
        "license": license_text,
        "generated_by": "routing/generate_profile.py; do not edit by hand",
        "rows": out_rows,
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    source_dir = Path(argv[0]) if argv else DEFAULT_SOURCE_DIR
    output = Path(argv[1]) if len(argv) > 1 else OUTPUT
    output.write_text(generate(source_dir), "utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
