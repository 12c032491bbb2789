"""Embedded defaults for a laptop: a local broker and a local S3/DynamoDB endpoint.

Used by ``edgectl demo`` (and the developer loop); never imported by the agent.
"""
