"""Parsing and building Lambda function ARNs, as ``greengrasssdk.Lambda`` expects."""

from __future__ import annotations

import re

_ARN = re.compile(
    r"arn:(?P<partition>[^:]+):lambda:(?P<region>[^:]*):(?P<account_id>[^:]*):"
    r"function:(?P<name>[A-Za-z0-9\-_.]+)(?::(?P<qualifier>[A-Za-z0-9\-_$]+))?"
)


class FunctionArnFields:
    """``arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]``."""

    def __init__(self, function_arn: str) -> None:
        match = _ARN.fullmatch(function_arn or "")
        if match is None:
            raise ValueError(f"Cannot parse given string as a function ARN: {function_arn!r}")
        self.arn = function_arn
        self.partition = match["partition"]
        self.region = match["region"]
        self.account_id = match["account_id"]
        self.name = match["name"]
        self.qualifier = match["qualifier"] or ""
        self.unqualified_arn = (
            f"arn:{self.partition}:lambda:{self.region}:{self.account_id}:function:{self.name}"
        )

    @staticmethod
    def build_function_arn(unqualified_arn: str, qualifier: str | None = None) -> str:
        return f"{unqualified_arn}:{qualifier}" if qualifier else unqualified_arn
