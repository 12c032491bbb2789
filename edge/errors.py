"""One error hierarchy for the whole project.

Every error a user can cause or fix is an ``EdgeError``; the CLI's ``main()``
prints its message on one line and exits with ``exit_code``. Anything else is a
bug and keeps its traceback.

    EdgeError                       exit 1
    ├── UsageError                  exit 2  bad flags, unknown device or component
    ├── ValidationError             exit 2  a manifest, inventory or document is wrong
    │   └── EventError              exit 2  an event file or payload does not parse
    ├── BrokerError                 exit 1  the MQTT broker refused us or is unreachable
    ├── CloudError                  exit 1  an AWS (or S3/DynamoDB compatible) call failed
    │   ├── AccessDenied
    │   ├── NotFound
    │   └── Throttled               retryable
    ├── BuildError                  exit 1  packaging failed (missing wheel, recipe too big)
    ├── DeployError                 exit 1  a deployment failed or was rolled back
    ├── WorkerError                 exit 1  a function's worker process misbehaved
    │   ├── HandlerLoadError        the handler module does not import or lacks the name
    │   └── InvocationTimeout       the handler overran its timeout
    └── ToolMissing                 exit 1  an external binary (mosquitto, node, dot) is absent

Messages name the file, the field and the value (``devices/pi01.yaml:
broker.url: 'tcp:/x' is not an mqtt:// or mqtts:// URL``); they never contain
payloads or secrets.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the user can act on."""

    exit_code = 1


class UsageError(EdgeError):
    exit_code = 2


class ValidationError(EdgeError):
    """A document is invalid; ``source``/``field``/``value`` locate the fault."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        self.source = source
        self.field = field
        self.value = value
        prefix = ""
        if source:
            prefix += f"{source}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)


class EventError(ValidationError):
    pass


class BrokerError(EdgeError):
    pass


class CloudError(EdgeError):
    """An AWS call failed; ``retryable`` tells the sync loop whether to back off and retry."""

    retryable = True

    def __init__(self, message: str, *, operation: str = "", resource: str = "") -> None:
        self.operation = operation
        self.resource = resource
        super().__init__(message)


class AccessDenied(CloudError):
    retryable = False


class NotFound(CloudError):
    retryable = False


class Throttled(CloudError):
    retryable = True


class BuildError(EdgeError):
    pass


class DeployError(EdgeError):
    pass


class WorkerError(EdgeError):
    pass


class HandlerLoadError(WorkerError):
    pass


class InvocationTimeout(WorkerError):
    pass


class ToolMissing(EdgeError):
    pass
