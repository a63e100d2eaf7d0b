"""runner: run training jobs on GPU hosts from one job file."""

__version__ = "0.1.0"
