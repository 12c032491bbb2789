"""edgectl: Lambda-style functions on edge devices.

The package is split into rooms that only talk through ``edge.model``:
``model`` (the vocabulary), ``build``, ``deploy``, ``agent``, ``runtime``,
``sync``, ``mqtt`` (the only importer of paho), ``aws`` (the only importer of
boto3) and ``cli`` (the only importer of typer and rich).
"""

__version__ = "0.1.0"
