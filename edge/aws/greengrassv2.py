"""The AWS IoT Greengrass v2 calls the project makes, and nothing else.

Every list call follows ``nextToken`` to the end (a fleet of thousands spans
many pages); every method takes and returns plain values and raises only the
``CloudError`` family, with the operation and the resource named. The client
is injected: a boto3 client from ``edge.aws.session.make_client``, a botocore
``Stubber``-wrapped one in tests, or ``edge.deploy.calls.RecordingClient`` for
``--dry-run``, which is why parameters are always passed as keyword
dictionaries built in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from edge.aws.errors import translate

SERVICE = "greengrassv2"


def component_arn_without_version(arn: str) -> str:
    """``...:components:Name:versions:1.0.0`` -> ``...:components:Name``."""
    head, sep, _ = arn.partition(":versions:")
    return head if sep else arn


class GreengrassV2Client:
    def __init__(self, client: Any) -> None:
        self._client = client

    def _pages(
        self, method: str, operation: str, resource: str, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield every page of a list call, following ``nextToken`` explicitly.

        Explicit tokens rather than botocore paginators: the request shape of
        each page is then visible to a ``Stubber`` and to the dry-run recorder.
        """
        token: str | None = None
        while True:
            request = dict(params)
            if token:
                request["nextToken"] = token
            try:
                page = getattr(self._client, method)(**request)
            except Exception as exc:
                raise translate(exc, operation=operation, resource=resource) from exc
            yield page
            token = page.get("nextToken")
            if not token:
                return

    def _call(self, method: str, operation: str, resource: str, **params: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._client, method)(**params)
        except Exception as exc:
            raise translate(exc, operation=operation, resource=resource) from exc
        return result

    # Components -------------------------------------------------------------

    def find_component_arn(self, name: str) -> str | None:
        """The ARN (without version) of the account's component ``name``, or None if unpublished.

        Found through ListComponents rather than built from an account id, so
        publishing needs no STS permission.
        """
        for page in self._pages(
            "list_components", "ListComponents", f"component {name}", scope="PRIVATE"
        ):
            for item in page.get("components", []):
                if item.get("componentName") == name:
                    return component_arn_without_version(str(item["arn"]))
        return None

    def list_component_versions(self, arn: str) -> list[str]:
        versions: list[str] = []
        for page in self._pages("list_component_versions", "ListComponentVersions", arn, arn=arn):
            versions.extend(str(v["componentVersion"]) for v in page.get("componentVersions", []))
        return versions

    def create_component_version(self, recipe: bytes, name: str, version: str) -> dict[str, Any]:
        """Register a component version from its inline recipe; returns the API's answer."""
        return self._call(
            "create_component_version", "CreateComponentVersion", f"component {name} {version}",
            inlineRecipe=recipe,
        )  # fmt: skip

    def get_component_recipe(self, arn: str, version: str) -> bytes:
        """The recipe of a published component version, as JSON bytes."""
        versioned = f"{arn}:versions:{version}"
        response = self._call(
            "get_component", "GetComponent", versioned,
            arn=versioned, recipeOutputFormat="JSON",
        )  # fmt: skip
        recipe = response.get("recipe", b"")
        return recipe if isinstance(recipe, bytes) else str(recipe).encode("utf-8")

    # Deployments ------------------------------------------------------------

    def get_core_device(self, thing_name: str) -> dict[str, Any]:
        return self._call(
            "get_core_device", "GetCoreDevice", f"core device {thing_name}",
            coreDeviceThingName=thing_name,
        )  # fmt: skip

    def latest_deployment_id(self, target_arn: str) -> str | None:
        """The id of the newest deployment to exactly this target (thing or thing group)."""
        for page in self._pages(
            "list_deployments", "ListDeployments", target_arn,
            targetArn=target_arn, historyFilter="LATEST_ONLY",
        ):  # fmt: skip
            for item in page.get("deployments", []):
                if item.get("targetArn") == target_arn and item.get("isLatestForTarget", True):
                    return str(item["deploymentId"])
        return None

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._call(
            "get_deployment", "GetDeployment", f"deployment {deployment_id}",
            deploymentId=deployment_id,
        )  # fmt: skip

    def create_deployment(self, params: Mapping[str, Any]) -> dict[str, Any]:
        target = str(params.get("targetArn", ""))
        return self._call("create_deployment", "CreateDeployment", target, **params)

    # Fleet ------------------------------------------------------------------

    def list_core_devices(self, thing_group_arn: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if thing_group_arn:
            params["thingGroupArn"] = thing_group_arn
        devices: list[dict[str, Any]] = []
        for page in self._pages("list_core_devices", "ListCoreDevices", "core devices", **params):
            devices.extend(page.get("coreDevices", []))
        return devices

    def list_installed_components(self, thing_name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self._pages(
            "list_installed_components", "ListInstalledComponents", f"core device {thing_name}",
            coreDeviceThingName=thing_name,
        ):  # fmt: skip
            items.extend(page.get("installedComponents", []))
        return items

    def list_effective_deployments(self, thing_name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self._pages(
            "list_effective_deployments", "ListEffectiveDeployments",
            f"core device {thing_name}", coreDeviceThingName=thing_name,
        ):  # fmt: skip
            items.extend(page.get("effectiveDeployments", []))
        return items
