"""The wire form of DICOM JSON documents as the Native DICOM Model of PS3.19 (application/dicom+xml)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from pydicom.datadict import keyword_for_tag

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def to_xml(wire: dict[str, Any]) -> bytes:
    root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _fill(root, wire)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _fill(parent: ET.Element, wire: dict[str, Any]) -> None:
    for key, elem in wire.items():
        attrs = {"tag": key, "vr": elem.get("vr", "UN")}
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            attrs["keyword"] = keyword
        node = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in elem:
            ET.SubElement(node, "BulkData", {"uri": elem["BulkDataURI"]})
        elif "InlineBinary" in elem:
            ET.SubElement(node, "InlineBinary").text = elem["InlineBinary"]
        elif attrs["vr"] == "SQ":
            for number, item in enumerate(elem.get("Value") or [], 1):
                _fill(ET.SubElement(node, "Item", {"number": str(number)}), item)
        elif attrs["vr"] == "PN":
            for number, name in enumerate(elem.get("Value") or [], 1):
                _person_name(ET.SubElement(node, "PersonName", {"number": str(number)}), name or {})
        else:
            for number, value in enumerate(elem.get("Value") or [], 1):
                value_node = ET.SubElement(node, "Value", {"number": str(number)})
                if value is not None:
                    value_node.text = str(value)


def _person_name(node: ET.Element, name: dict[str, str]) -> None:
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        text = name.get(group)
        if not text:
            continue
        group_node = ET.SubElement(node, group)
        for part, value in zip(PN_PARTS, text.split("^")):
            if value:
                ET.SubElement(group_node, part).text = value
