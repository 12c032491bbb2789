"""Shared fixtures live in ``tests/harness``; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.harness.mosquitto",
    "tests.harness.moto",
    "tests.harness.agent",
    "tests.harness.deploy",
    "tests.harness.store",
]
