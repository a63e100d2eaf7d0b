"""Test doubles shipped with runner for users' own tests, as fabric ships its own.

`runner.testing.vast_emulator` is a faithful vast.ai emulator: the REST API's shapes and quirks on a
loopback HTTP server and, when asked, every rented instance a real docker container with sshd, so a
client written against vast.ai works against it unchanged (and runner's own tests use it that way).
"""
