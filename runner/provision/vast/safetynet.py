"""The safety net on a rented instance: a watchdog that ends the instance's container when its job is
over and no controller looks after it, so a closed laptop costs at most the remaining training.

vast.ai's ssh runtype runs its own main process in the container (sshd, in the emulator), so the job
cannot be that process; the instance's `onstart` starts this watchdog beside it instead (plain sh: no
runner code is on the instance at that moment). Every few seconds it looks at the job's directory:

- the job's exit code exists and no controller has looked for LEASE_S (the agent's probe touches
  LEASE_FILE each time it reads the job; a keeper probes every 10 s): it prints the outcome line to the
  container's log (the main process's stdout, which vast's logs endpoint returns) and ends the main
  process, and with it the container and its GPU billing. A controller that has looked since the end
  is fetching and tearing down: it gets SEEN_GRACE_S, as does one that started the instance again.
  (A look counts from its lease touch: one a controller had under way when it went still counts.)
- the budget (resources.max_cost, from the price at rent) is spent, plus BUDGET_SLACK_S so that a
  keeper, when there is one, acts first: Ctrl-C to the train window, SIGKILL to the job's processes
  after KILL_GRACE_S, the outcome line with the reason, and the container ends.

The outcome line (OUTCOME) is how a controller that comes back learns the job's true end from the API
alone; the watchdog also keeps it in ENDED_FILE, so that after the controller starts the instance
again for the final fetch, the watchdog restarted by onstart knows the end was already reported.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from dataclasses import dataclass

LEASE_FILE = "lease"  # touched by the agent's probe (runner/hostside/agent.py): a controller looked
ENDED_FILE = "safetynet_ended"  # the outcome line, once printed
SCRIPT_PATH = "~root/.runner/safetynet.sh"  # ~root: the SSH user's home, where the job directories are
LEASE_S = 40  # with the 5 s checks, the container ends within 45 s of the end when nobody looks
SEEN_GRACE_S = 900  # a controller that saw the end has this long, from its last look, to fetch
CHECK_S = 5
KILL_GRACE_S = 30  # Ctrl-C, then this long before the job's processes are killed
BUDGET_SLACK_S = 60  # a keeper present stops the job at max_cost; the watchdog a minute later at most
ONSTART_LIMIT = 4096  # vast.ai's cap on onstart plus args

# $1 job id, $2 tmux session, $3 job dir, $4 budget deadline (epoch s, or empty), $5 its reason,
# $6 the main process, $7 lease, $8 seen grace, $9 check interval, $10 kill grace (seconds).
WATCHDOG = r"""
job=$1 session=$2 dir=$3 stop_at=$4 reason=$5 main=$6 lease_s=$7 seen_s=$8 every=$9
shift 9; kill_s=$1
started=$(date +%s)
# The main process's stdout is the container's log.
say() {
  if [ -w "/proc/$main/fd/1" ]; then echo "$1" >"/proc/$main/fd/1"; else echo "$1"; fi
}
mtime() { stat -c %Y "$1" 2>/dev/null || echo 0; }
code() {
  c=$(head -c 12 "$dir/exit_code" 2>/dev/null | tr -cd 0-9)
  echo "${c:-none}"
}
finish() {
  say "$1"
  [ -f "$dir/$ENDED" ] || printf '%s\n' "$1" >"$dir/$ENDED" 2>/dev/null
  kill -TERM "$main"
  sleep 10
  kill -KILL "$main" 2>/dev/null
  # A PID 1 deaf to signals from inside (a shell waiting on its children, no handler) ends with them.
  [ "$main" = 1 ] && kill -KILL -1 2>/dev/null
  exit 0
}
kill_job() {
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' <"$p/environ" | grep -qx "RUNNER_JOB_ID=$job"; } 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
  done
}
stop_job() {
  tmux send-keys -t "=$session:train" C-c 2>/dev/null
  waited=0
  while [ ! -f "$dir/exit_code" ] && [ "$waited" -lt "$kill_s" ]; do sleep 1; waited=$((waited + 1)); done
  if [ ! -f "$dir/exit_code" ]; then tmux kill-session -t "=$session" 2>/dev/null; kill_job; fi
}
while :; do
  now=$(date +%s)
  seen=$(mtime "$dir/lease")
  last=$seen
  [ "$last" -lt "$started" ] && last=$started
  if [ -f "$dir/$ENDED" ]; then
    # Started again after an end: a controller came back for the weights.
    [ $((now - last)) -ge "$seen_s" ] && finish "$(head -n 1 "$dir/$ENDED")"
  elif [ -f "$dir/exit_code" ]; then
    grace=$lease_s
    [ "$seen" -ge "$(mtime "$dir/exit_code")" ] && grace=$seen_s
    [ $((now - last)) -ge "$grace" ] && finish "runner: job $job ended with exit code $(code)"
  elif [ -n "$stop_at" ] && [ "$now" -ge "$stop_at" ]; then
    stop_job
    finish "runner: job $job stopped: $reason (exit code $(code))"
  fi
  sleep "$every"
done
""".replace("$ENDED", ENDED_FILE)

# The outcome lines the watchdog prints; what a host sends is untrusted, so read strictly.
OUTCOME = re.compile(
    r"runner: job (?P<job>[0-9a-z]{1,32}) (?:ended with exit code (?P<code>\d{1,3}|none)"
    r"|stopped: (?P<reason>[ -~]{1,200}) \(exit code (?P<stop_code>\d{1,3}|none)\))"
)


@dataclass(frozen=True)
class Watch:
    """What the watchdog of one job's instance is told at rent."""

    job_id: str
    session: str
    # When the budget is spent plus the slack, in epoch seconds of this machine's clock at rent, which the
    # instance compares with its own: both keep UTC by NTP, and the slack covers seconds of skew.
    stop_at: int | None
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """The job's end as the watchdog reported it."""

    exit_code: int | None
    stopped: str | None  # the reason, when the watchdog stopped the job

    @property
    def message(self) -> str:
        if self.stopped:
            return f"stopped on the instance: {self.stopped}"
        return "ended while no controller looked (the instance's safety net)"


def budget_watch(
    job_id: str, session: str, max_cost: float | None, spent: float, dph: float, now: float | None = None
) -> Watch:
    """The watch for an instance rented now at dph $/h, for a job that has spent `spent` $ already."""
    if max_cost is None or dph <= 0:
        return Watch(job_id, session, None)
    left_s = max(0.0, max_cost - spent) / dph * 3600.0
    stop_at = math.ceil((time.time() if now is None else now) + left_s + BUDGET_SLACK_S)
    return Watch(job_id, session, stop_at, f"resources.max_cost ${max_cost:.2f} reached")


def compact(script: str) -> str:
    """The script without its comment lines and indentation: onstart's 4096 characters are few."""
    lines = (line.strip() for line in script.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#"))


def launch(watch: Watch) -> str:
    """The lines of onstart that write the watchdog and start it, detached, beside the main process."""
    args = [watch.job_id, watch.session, "", "" if watch.stop_at is None else str(watch.stop_at), watch.reason,
            "1", str(LEASE_S), str(SEEN_GRACE_S), str(CHECK_S), str(KILL_GRACE_S)]  # fmt: skip
    quoted = [shlex.quote(arg) for arg in args]
    # The job directory with ~root expanded by onstart's shell (unquoted on purpose; the id is [0-9a-z]).
    quoted[2] = f"~root/.runner/jobs/{watch.job_id}"
    return (
        f"\nmkdir -p ~root/.runner && cat > {SCRIPT_PATH} <<'RUNNER_SAFETYNET'\n{compact(WATCHDOG)}\nRUNNER_SAFETYNET\n"
        f"nohup sh {SCRIPT_PATH} {' '.join(quoted)} >/dev/null 2>&1 &\n"
    )


def read_outcome(log_text: str, job_id: str) -> Outcome | None:
    """The last outcome line of this job in an instance's log; None when there is none."""
    found = None
    for line in log_text.splitlines():
        match = OUTCOME.fullmatch(line.strip())
        if match and match["job"] == job_id:
            found = match
    if found is None:
        return None
    code = found["code"] if found["reason"] is None else found["stop_code"]
    return Outcome(None if code == "none" else int(code), found["reason"])
