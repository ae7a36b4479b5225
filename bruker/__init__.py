"""Bruker ParaVision ingest: read parameter files, find reconstructions, convert them to DICOM.

Library entry points:

* :func:`bruker.convert.convert_path` - path (study, scan, reconstruction or
  zip) -> iterator of :class:`bruker.convert.ConversionResult`;
* :func:`bruker.cli.convert_command` / :func:`bruker.cli.import_command` -
  the bodies of ``dopamine bruker convert`` and ``dopamine bruker import``;
* :func:`bruker.jcamp.read_jcamp` - one ParaVision parameter file.
"""

from .convert import ConversionResult, convert_path

__all__ = ["ConversionResult", "convert_path"]
