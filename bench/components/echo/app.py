"""The trivial warm handler the agent benchmark times: it returns its event.

The prober's payload is ``{"seq": N, "pad": "..."}``; returning it unchanged
puts the sequence number back on the output topic for the prober to match.
"""


def handler(event, context):
    return event
