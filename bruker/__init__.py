"""Bruker ParaVision ingest: read parameter files, find reconstructions, convert them to DICOM."""
