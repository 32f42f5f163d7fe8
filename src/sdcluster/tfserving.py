"""TensorFlow Serving's facts as sdcluster uses them: its ports and its REST paths.

Example: ``model_url("34.1.2.3", "stable-diffusion")`` -> ``'http://34.1.2.3:8501/v1/models/stable-diffusion'``.
"""

from __future__ import annotations

# TF Serving's defaults (model_servers/main.cc: --port=8500 gRPC, --rest_api_port REST).
GRPC_PORT = 8500
HTTP_PORT = 8501


def model_url(host: str, model_name: str, port: int = HTTP_PORT) -> str:
    """The REST URL of a model: status at the URL itself, ``/metadata``, ``:predict``."""
    return f"http://{host}:{port}/v1/models/{model_name}"
