"""Target platforms a component is built for.

A platform names three things that must agree: the Greengrass recipe's
manifest ``Platform`` (``os``/``architecture`` as the nucleus reports them),
the wheel tags pip may install for it, and a short label used in artifact
names. The aliases follow the device classes (``raspberry-pi`` means both Pi
architectures still sold; ``snowball-edge`` is x86_64).

Wheel tags are deliberately conservative: glibc targets accept
``manylinux_2_28`` and older (Raspberry Pi OS bookworm ships glibc 2.36,
Amazon Linux 2023 2.34), musl targets ``musllinux_1_2`` and older.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import UsageError


@dataclass(frozen=True, order=True)
class TargetPlatform:
    os: str
    architecture: str  # as Greengrass reports it: aarch64, arm, amd64
    machine: str  # as uname -m and wheel tags spell it: aarch64, armv7l, x86_64
    libc: str = "glibc"  # glibc | musl

    @property
    def label(self) -> str:
        suffix = "-musl" if self.libc == "musl" else ""
        return f"{self.os}-{self.machine}{suffix}"

    @property
    def pip_platforms(self) -> tuple[str, ...]:
        """Platform tags for ``pip install --platform``, newest first.

        pip does not expand an explicit ``--platform`` to the older tags it
        implies, so every accepted tag is listed: glibc 2.28 down to 2.17
        (``manylinux2014``, the oldest for ARM), and for x86_64 on to
        ``manylinux1``; musl 1.2 and 1.1.
        """
        arch = self.machine
        if self.libc == "musl":
            return (f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}")
        oldest = 5 if arch == "x86_64" else 17
        tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, oldest - 1, -1)]
        tags.append(f"manylinux2014_{arch}")
        if arch == "x86_64":
            tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
        return tuple(tags)

    def recipe_platform(self) -> dict[str, str]:
        """The recipe manifest's ``Platform`` block; musl targets carry a ``libc`` attribute.

        The nucleus matches custom platform attributes only when the device sets
        them (``platformOverride``), so musl manifests are listed first: a glibc
        device skips them and falls through to its own manifest.
        """
        block = {"os": self.os, "architecture": self.architecture}
        if self.libc == "musl":
            block["libc"] = "musl"
        return block


LINUX_AARCH64 = TargetPlatform("linux", "aarch64", "aarch64")
LINUX_ARMV7L = TargetPlatform("linux", "arm", "armv7l")
LINUX_AMD64 = TargetPlatform("linux", "amd64", "x86_64")
MUSL_AARCH64 = TargetPlatform("linux", "aarch64", "aarch64", "musl")
MUSL_ARMV7L = TargetPlatform("linux", "arm", "armv7l", "musl")
MUSL_AMD64 = TargetPlatform("linux", "amd64", "x86_64", "musl")

ALIASES: dict[str, tuple[TargetPlatform, ...]] = {
    "raspberry-pi": (LINUX_AARCH64, LINUX_ARMV7L),
    "snowball-edge": (LINUX_AMD64,),
    "generic-linux": (LINUX_AMD64, LINUX_AARCH64),
    "linux/aarch64": (LINUX_AARCH64,),
    "linux/arm64": (LINUX_AARCH64,),
    "linux/armv7l": (LINUX_ARMV7L,),
    "linux/arm": (LINUX_ARMV7L,),
    "linux/amd64": (LINUX_AMD64,),
    "linux/x86_64": (LINUX_AMD64,),
    "linux-musl/aarch64": (MUSL_AARCH64,),
    "linux-musl/armv7l": (MUSL_ARMV7L,),
    "linux-musl/amd64": (MUSL_AMD64,),
}

DEFAULT_PLATFORMS: tuple[TargetPlatform, ...] = (LINUX_AARCH64, LINUX_ARMV7L, LINUX_AMD64)

_MACHINE_TO_PLATFORM = {
    "aarch64": LINUX_AARCH64,
    "arm64": LINUX_AARCH64,
    "armv7l": LINUX_ARMV7L,
    "arm": LINUX_ARMV7L,
    "x86_64": LINUX_AMD64,
    "amd64": LINUX_AMD64,
}


def parse_platforms(names: list[str] | tuple[str, ...]) -> tuple[TargetPlatform, ...]:
    """Resolve ``--platform`` values (aliases or ``os/arch``) to a sorted, de-duplicated tuple.

    No names means the default set (the Pi architectures and x86_64), so a
    component built without flags runs on every device class.
    """
    if not names:
        return DEFAULT_PLATFORMS
    found: list[TargetPlatform] = []
    for name in names:
        key = name.strip().lower()
        if key not in ALIASES:
            choices = ", ".join(sorted(ALIASES))
            raise UsageError(
                f"--platform: {name!r} is not a known platform (choose from {choices})"
            )
        for platform in ALIASES[key]:
            if platform not in found:
                found.append(platform)
    return tuple(found)


def platform_for_device(os_name: str, architecture: str) -> TargetPlatform:
    """The build target for a device inventory's ``platform`` block."""
    target = _MACHINE_TO_PLATFORM.get(architecture.lower())
    if os_name.lower() != "linux" or target is None:
        raise UsageError(f"platform: {os_name}/{architecture!r} is not a supported build target")
    return target
