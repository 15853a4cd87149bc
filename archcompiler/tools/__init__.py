"""The user's tools over the Python API: the ``archc`` command line, text/HTML rendering,
diagrams and plots."""
