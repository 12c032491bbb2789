"""The Greengrass v1 core modules ``greengrasssdk`` needs (``greengrass_common``,
``greengrass_ipc_python_sdk``), written for edgectl from their documented behaviour.

This folder (not this package) goes on a Python worker's ``PYTHONPATH``, so the
two appear as top-level modules to an unmodified v1 function.
"""
