"""Load generators and comparisons for Odradek against any Kafka-compatible server.

Print figures, assert nothing. See README.md for the one command that runs them.
"""
