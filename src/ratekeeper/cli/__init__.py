"""The ``ratekeeper`` command line: thin over the Python API."""
