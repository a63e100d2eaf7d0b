"""No module outside runner/hosts/ and runner/provision/ asks what kind of host it holds.

Whatever differs between a local machine, an SSH box and a rented instance is a method of the
Host protocol (forward, docker_engine, interactive_argv, handshake, shares_this_filesystem, ...);
a branch on the kind elsewhere is a method missing there. A grep, not an import check: the
questions below are spelled in a few well-known ways, and each is a line to find.
"""

from __future__ import annotations

import re

from tests.conftest import REPO

PACKAGE = REPO / "runner"
ALLOWED = (PACKAGE / "hosts", PACKAGE / "provision")

KIND_QUESTIONS = {
    "isinstance with a host class": re.compile(r"isinstance\([^)]*\b(LocalHost|SshHost)\b"),
    "a host's kind compared": re.compile(r"\bhost\w*\.kind\s*(==|!=|\bin\b|\bnot\s+in\b)"),
    "a kind compared with a host kind": re.compile(r"\.kind\s*(==|!=)\s*[\"'](local|ssh|vast)[\"']"),
    "a host's transport compared": re.compile(r"\bhost\w*\.transport\s*(==|!=|\bin\b|\bnot\s+in\b)"),
    "a rented instance told by its name": re.compile(r"startswith\(\s*[\"']vast"),
    "a host asked what it has": re.compile(r"hasattr\(\s*host"),
    "the OpenSSH transport asked for": re.compile(r"\buses_openssh\b"),
}


def kind_questions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path.is_relative_to(folder) for folder in ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}"
                      for what, pattern in KIND_QUESTIONS.items() if pattern.search(line)]  # fmt: skip
    return found


def test_no_module_outside_hosts_and_provision_asks_what_kind_of_host_it_holds() -> None:
    assert kind_questions() == []


def test_the_grep_finds_each_way_of_asking() -> None:
    lines = ['if isinstance(host, SshHost):', 'if host.kind == "local":', 'job.kind != "ssh"',
             'if self.host.transport == "paramiko":', 'name.startswith("vast-")', 'hasattr(host, "prewarm")',
             'host.uses_openssh']  # fmt: skip
    for line in lines:
        assert any(pattern.search(line) for pattern in KIND_QUESTIONS.values()), line
    assert not any(pattern.search('event.kind == "retry"') for pattern in KIND_QUESTIONS.values())
