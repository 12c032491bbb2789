"""Hello: the component the demo deploys.

A Lambda-style handler: ``event`` is the decoded JSON payload of the trigger
message and ``context`` the Lambda context (the trigger topic is in
``context.client_context.custom["subject"]``).
"""


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    sensor = context.client_context.custom["subject"].split("/")[1]
    print(f"greeting {name} from {sensor}")
    return {
        "greeting": f"Hello, {name}!",
        "sensor": sensor,
        "request_id": context.aws_request_id,
        "function": f"{context.function_name}:{context.function_version}",
    }
