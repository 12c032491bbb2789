"""The direct backend's view of a fleet: status documents read from the broker.

* ``document``: parse one status document and classify the device it describes;
* ``reader``: read every retained status document from a broker, then follow changes;
* ``view``: turn documents plus the inventory into the backend-neutral ``FleetStatus``;
* ``netloop`` / ``simulate``: many lightweight simulated devices in one process.
"""
