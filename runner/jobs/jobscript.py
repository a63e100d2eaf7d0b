"""The two scripts a job directory holds: run.sh (runner's wrapper) and job.sh (the user's commands).

run.sh runs job.sh under util-linux `script`, so the training sees a terminal (progress bars behave
as they do in a user's tmux pane), and tees what it printed into train.log, byte for byte, carriage
returns and colours included. The pipeline has ended before exit_code is written, so a log is
complete once its exit code exists. Hosts without `script` run job.sh on a pipe instead.

A job with an image runs container.sh there instead: job.sh in a container named after the job,
with the job directory and the host's data directory mounted at their own paths (so the links
into the data and every path in the scripts mean the same inside and out). The container's exit
code is the job's.

The end is recorded so that neither a full disk nor a stop racing it can misreport it (see
runner/hostside/jobend.py): run.sh takes room for the records before the training starts, job.sh
marks the training's end the moment its last command exits, and both records are made under the
job directory's flock, which the agent's `stop` takes too: a stop is delivered only while the
training has not ended.
"""

from __future__ import annotations

import posixpath
import shlex

from runner.hostside.jobend import RESERVE_BYTES, STATUS_SLOT_BYTES
from runner.jobs.spec import JobSpec

RUN_SH = """\
#!/usr/bin/env bash
# Written by runner for job {job_id} ({job_name}); the train window runs it.
cd {job_dir} || exit 1
# Ctrl-C stops the training, not this wrapper: the exit code must still be recorded.
trap 'true' INT
# `runner stop` finds every process of the job, daemonised ones too, by this variable.
export RUNNER_JOB_ID={job_id}
# Room for the end's records and the monitor's status.json, taken before the training can fill the
# disk: each is later written over in place and renamed, which needs no new blocks, so a training that
# fills the disk still gets its exit code recorded and its disk_full alert seen. A reserve that could
# not be written whole is removed (it would need blocks when used). Under the job directory's lock,
# which the monitor takes for every status.json it writes (it may have written one already).
exec 9<.
command -v flock >/dev/null 2>&1 && flock 9
printf '%{reserve_bytes}s' '' > exit_code.reserved 2>/dev/null || rm -f exit_code.reserved
printf '%{reserve_bytes}s' '' > stop_delivered.reserved 2>/dev/null || rm -f stop_delivered.reserved
: > training_ended.reserved 2>/dev/null
[ -e status.json ] || printf '{{}}%{status_padding}s' '' > status.json 2>/dev/null || rm -f status.json
[ -s status.json.spare ] || printf '%{status_slot}s' '' > status.json.spare 2>/dev/null || rm -f status.json.spare
exec 9<&-
if command -v script >/dev/null 2>&1; then
    # script gives the training a terminal of its own; its copy of what was printed goes to tee.
    SHELL=/bin/bash script -q -e -f -c 'bash {script}' /dev/null | tee -i -a train.log
else
    bash {script} 2>&1 | tee -i -a train.log
fi
# Both writers have exited here, so train.log is complete before exit_code appears.
code=${{PIPESTATUS[0]}}
record_exit_code() {{
    if [ -f exit_code.reserved ] && printf '%s\\n' "$1" 2>/dev/null 1<>exit_code.reserved; then
        truncate -s "$(( ${{#1}} + 1 ))" exit_code.reserved 2>/dev/null  # the padding's blocks back
        mv -f exit_code.reserved exit_code && return 0
    fi
    {{ printf '%s\\n' "$1" > exit_code.tmp && mv -f exit_code.tmp exit_code; }} 2>/dev/null && return 0
    rm -f exit_code.tmp
    return 1
}}
# Under the job directory's lock (the agent's stop takes it to decide whether the stop came first).
exec 9<.
command -v flock >/dev/null 2>&1 && flock 9
[ -e training_ended ] || mv -f training_ended.reserved training_ended 2>/dev/null
record_exit_code "$code"
exec 9<&-
rm -f stop_delivered.reserved  # no stop can be delivered after the exit code
# The monitor's last snapshot, with the exit code and the log's final lines (a traceback, an OOM);
# it also removes temporary files a failed write left.
{final_snapshot} >/dev/null 2>&1 || true
tmux kill-session -t {session_target}
"""

JOB_SH = """\
#!/usr/bin/env bash
# The commands of job {job_id} ({job_name}), from {job_file}. The first failing line ends the job.
set -eo pipefail
trap 'echo "runner: \\"$BASH_COMMAND\\" failed with exit status $?" >&2' ERR
# The training's end, the moment its last command exits (before the log's writers have drained): a
# stop that comes after it finds the training ended and is not delivered. Under the job directory's
# lock, as run.sh records the exit code; inside a container too (the job directory is mounted there).
runner_training_ended() {{
    {{ exec 8<{job_dir} && {{ command -v flock >/dev/null 2>&1 && flock 8; true; }} &&
      {{ mv -f {job_dir}/training_ended.reserved {job_dir}/training_ended || : > {job_dir}/training_ended; }}
    }} 2>/dev/null
}}
trap runner_training_ended EXIT
cd {work_dir}
# A rented instance's image environment, which its SSH sessions lack (written there at its start).
if [ -f {image_env} ]; then . {image_env}; fi
{exports}
# setup
{setup}
# run
{run}
"""

# A rented instance's image environment, which an SSH session there lacks: written by its onstart
# (runner.provision.vast), read by job.sh.
IMAGE_ENV_FILE = "/etc/runner-image-env.sh"

CONTAINER_SH = """\
#!/usr/bin/env bash
# Written by runner for job {job_id} ({job_name}): job.sh in a container of {image_comment}.
name={name}
docker rm -f "$name" >/dev/null 2>&1 || true  # a container left by an earlier start of this same job
flags=(--name "$name" --label runner.job={job_id} --init --ipc=host
       -v {job_dir}:{job_dir} -w {work_dir} -e RUNNER_JOB_ID={job_id}{env_flags})
[ -d {data_dir} ] && flags+=(-v {data_dir}:{data_dir})
# With the train window's terminal, one inside too: progress bars draw as usual, and keys (Ctrl-C from
# the window or from `runner stop`) reach the training through it, as at a keyboard.
[ -t 0 ] && [ -t 1 ] && flags+=(-i -t)
{vendor_lines}
docker run "${{flags[@]}}" {image} bash {job_sh}
code=$?
docker rm "$name" >/dev/null 2>&1 || true
exit "$code"
"""

# ROCm: the GPU's device files, and their groups by number (the image has no group of their names).
AMD_LINES = """\
flags+=(--device=/dev/kfd --device=/dev/dri --security-opt seccomp=unconfined --cap-add=SYS_PTRACE)
for device in /dev/kfd /dev/dri/renderD*; do
    [ -e "$device" ] && flags+=(--group-add "$(stat -c %g "$device")")
done
mkdir -p {job_dir}/miopen/db {job_dir}/miopen/cache
flags+=(-e MIOPEN_USER_DB_PATH={job_dir}/miopen/db -e MIOPEN_CUSTOM_CACHE_DIR={job_dir}/miopen/cache)"""
NVIDIA_LINES = "flags+=(--gpus all)"


def render_container_sh(job_id: str, job_name: str, container: str, image: str, env: dict[str, str],
                        vendor: str | None, job_dir: str, data_dir: str) -> str:  # fmt: skip
    """container.sh: runs job.sh in a container of image, named container, with env and the GPU of vendor."""
    env_flags = "".join(f" -e {shlex.quote(f'{name}={value}')}" for name, value in sorted(env.items()))
    vendor_lines = {"amd": AMD_LINES, "nvidia": NVIDIA_LINES}.get(vendor or "", "# no GPU: a CPU container")
    return CONTAINER_SH.format(
        job_id=job_id,
        job_name=job_name,
        image_comment=_one_line(image),
        name=shlex.quote(container),
        job_dir=shlex.quote(job_dir),
        work_dir=shlex.quote(f"{job_dir}/work"),
        data_dir=shlex.quote(data_dir),
        env_flags=env_flags,
        vendor_lines=vendor_lines.format(job_dir=shlex.quote(job_dir)),
        image=shlex.quote(image),
        job_sh=shlex.quote(f"{job_dir}/job.sh"),
    )


def render_run_sh(
    job_id: str, job_name: str, job_dir: str, session_target: str, snapshot_argv: list[str], script: str = "job.sh"
) -> str:
    """run.sh, which runs script (job.sh, or container.sh for a job with an image) in the train window."""
    return RUN_SH.format(
        script=script,
        job_id=job_id,
        job_name=job_name,
        job_dir=shlex.quote(job_dir),
        session_target=shlex.quote(session_target),
        final_snapshot=shlex.join(snapshot_argv),
        reserve_bytes=RESERVE_BYTES,
        status_slot=STATUS_SLOT_BYTES,
        status_padding=STATUS_SLOT_BYTES - 2,  # after "{}": an empty snapshot, which readers take for none
    )


def render_job_sh(job_id: str, spec: JobSpec, job_file: str, work_dir: str) -> str:
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in spec.env.items())
    return JOB_SH.format(
        job_id=job_id,
        job_name=spec.name,
        job_file=_one_line(job_file),
        work_dir=shlex.quote(work_dir),
        job_dir=shlex.quote(posixpath.dirname(work_dir.rstrip("/"))),
        image_env=IMAGE_ENV_FILE,
        exports=exports,
        setup="\n".join(spec.setup),
        run="\n".join(spec.run),
    )


def _one_line(text: str) -> str:
    # The job file's path lands in a comment: a newline in it must not end the comment.
    return text.replace("\n", " ").replace("\r", " ")
