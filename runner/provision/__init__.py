"""Provisioners: where a job's host comes from (static hosts, or vast.ai's rented instances)."""

from __future__ import annotations

from runner.provision.base import Admission, Provisioner
from runner.provision.static import StaticProvisioner

RENTING = "vast"  # the host name of a job file that rents an instance for the job

__all__ = ["Admission", "Provisioner", "provisioner_for"]


def provisioner_for(host_name: str, named_by_option: bool = False, trust_new: bool = False) -> Provisioner:
    if host_name == RENTING:
        from runner.provision.vast.renting import VastProvisioner  # httpx is imported only to rent

        return VastProvisioner()
    return StaticProvisioner(host_name, named_by_option, trust_new)
