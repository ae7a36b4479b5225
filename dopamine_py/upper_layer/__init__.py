"""The DICOM upper layer and DIMSE messages of our association acceptor (PS3.7, PS3.8).

pynetdicom spent about 2.6 ms per C-STORE on one association (two threads per association, a state
machine and pydicom-encoded command sets): more than Orthanc's whole time per instance. The acceptor
here is a plain blocking loop, one thread per association, that reads and writes PDUs itself.
pynetdicom stays our association *requestor* (C-MOVE sub-associations, forwarding).
"""
