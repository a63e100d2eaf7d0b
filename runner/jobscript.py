"""The two scripts a job directory holds: run.sh (runner's wrapper) and job.sh (the user's commands).

run.sh runs job.sh under util-linux `script`, so the training sees a terminal (progress bars behave
as they do in a user's tmux pane), and tees what it printed into train.log, byte for byte, carriage
returns and colours included. The pipeline has ended before exit_code is written, so a log is
complete once its exit code exists. Hosts without `script` run job.sh on a pipe instead.
"""

from __future__ import annotations

import shlex

from runner.spec import JobSpec

RUN_SH = """\
#!/usr/bin/env bash
# Written by runner for job {job_id} ({job_name}); the train window runs it.
cd {job_dir} || exit 1
# Ctrl-C stops the training, not this wrapper: the exit code must still be recorded.
trap 'true' INT
# `runner stop` finds every process of the job, daemonised ones too, by this variable.
export RUNNER_JOB_ID={job_id}
if command -v script >/dev/null 2>&1; then
    # script gives the training a terminal of its own; its copy of what was printed goes to tee.
    SHELL=/bin/bash script -q -e -f -c 'bash job.sh' /dev/null | tee -i -a train.log
else
    bash job.sh 2>&1 | tee -i -a train.log
fi
# Both writers have exited here, so train.log is complete before exit_code appears.
code=${{PIPESTATUS[0]}}
printf '%s\\n' "$code" > exit_code.tmp && mv -f exit_code.tmp exit_code
# The monitor's last snapshot, with the exit code and the log's final lines (a traceback, an OOM).
{final_snapshot} >/dev/null 2>&1 || true
tmux kill-session -t {session_target}
"""

JOB_SH = """\
#!/usr/bin/env bash
# The commands of job {job_id} ({job_name}), from {job_file}. The first failing line ends the job.
set -eo pipefail
trap 'echo "runner: \\"$BASH_COMMAND\\" failed with exit status $?" >&2' ERR
cd {work_dir}
{exports}
# setup
{setup}
# run
{run}
"""


def render_run_sh(job_id: str, job_name: str, job_dir: str, session_target: str, snapshot_argv: list[str]) -> str:
    return RUN_SH.format(
        job_id=job_id,
        job_name=job_name,
        job_dir=shlex.quote(job_dir),
        session_target=shlex.quote(session_target),
        final_snapshot=shlex.join(snapshot_argv),
    )


def render_job_sh(job_id: str, spec: JobSpec, job_file: str, work_dir: str) -> str:
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in spec.env.items())
    return JOB_SH.format(
        job_id=job_id,
        job_name=spec.name,
        job_file=_one_line(job_file),
        work_dir=shlex.quote(work_dir),
        exports=exports,
        setup="\n".join(spec.setup),
        run="\n".join(spec.run),
    )


def _one_line(text: str) -> str:
    # The job file's path lands in a comment: a newline in it must not end the comment.
    return text.replace("\n", " ").replace("\r", " ")
