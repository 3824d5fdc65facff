"""ApiVersions (API key 18), versions 0-4.

Answers with every API in `protocol/apis.py` and its advertised version range, and records the
client's software name and version (KIP-511, v3+) on the connection. An unknown version is
answered by the connection with a v0 response carrying UNSUPPORTED_VERSION (as Kafka does).
Errors: UNSUPPORTED_VERSION, INVALID_REQUEST (v3+ with an invalid software name or version).
"""

from __future__ import annotations

import re
from datetime import timedelta
from types import ModuleType

from odradek.protocol import apis
from odradek.protocol.errors import ErrorCode

# KIP-511: client software name and version must match this pattern.
_SOFTWARE_PATTERN = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")


def api_keys_for(module: ModuleType) -> tuple:
    cls = module.ApiVersion
    return tuple(
        apis.make(cls, api_key=api.key, min_version=api.min_version, max_version=api.max_version)
        for api in apis.APIS.values()
    )


async def handle(request, ctx):
    error = ErrorCode.none
    if ctx.api_version >= 3:
        name = request.client_software_name
        version = request.client_software_version
        if _SOFTWARE_PATTERN.match(name or "") and _SOFTWARE_PATTERN.match(version or ""):
            ctx.client.software_name = name
            ctx.client.software_version = version
        else:
            error = ErrorCode.invalid_request
    return ctx.response(
        error_code=error,
        api_keys=api_keys_for(ctx.response_module),
        throttle_time=timedelta(0),
    )
