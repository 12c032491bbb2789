"""The AWS IoT calls the project makes: resolving thing and thing-group ARNs.

Greengrass deployments target an ARN, and an ARN holds the account id; asking
IoT for it (instead of building it from STS) also proves the thing or group
exists before a deployment is created for it.
"""

from __future__ import annotations

from typing import Any

from edge.aws.errors import translate

SERVICE = "iot"


class IotClient:
    def __init__(self, client: Any) -> None:
        self._client = client

    def thing_arn(self, thing_name: str) -> str:
        try:
            response = self._client.describe_thing(thingName=thing_name)
        except Exception as exc:
            raise translate(exc, operation="DescribeThing", resource=f"thing {thing_name}") from exc
        return str(response["thingArn"])

    def thing_group_arn(self, group_name: str) -> str:
        try:
            response = self._client.describe_thing_group(thingGroupName=group_name)
        except Exception as exc:
            raise translate(
                exc, operation="DescribeThingGroup", resource=f"thing group {group_name}"
            ) from exc
        return str(response["thingGroupArn"])
