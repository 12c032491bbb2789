"""The environment a Greengrass v1 core gives a function, read once at import.

The edge agent sets these variables for every Python worker (see
``edge.agent.ggv1.worker_environment``).
"""

import os

AUTH_TOKEN = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
MY_FUNCTION_ARN = os.environ.get("MY_FUNCTION_ARN")
ROUTER_FUNCTION_ARN = os.environ.get("ROUTER_FUNCTION_ARN")
SHADOW_FUNCTION_ARN = os.environ.get("SHADOW_FUNCTION_ARN")
SECRETS_MANAGER_FUNCTION_ARN = os.environ.get("SECRETS_MANAGER_FUNCTION_ARN")
GG_DAEMON_PORT = os.environ.get("GG_DAEMON_PORT", "8000")
