"""pycalico: a Calico-style pod network written in Python."""

__version__ = "0.1.0"
