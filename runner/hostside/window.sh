#!/usr/bin/env bash
# runner's tmux windows besides `train`: each shows its tool, or says plainly why it cannot,
# and then leaves a shell open so the window never vanishes without a word.
#   window.sh gpu
#   window.sh cpu
#   window.sh tensorboard LOGDIR PORT      (LOGDIR empty: TensorBoard is off for this job)
#   window.sh shell
set -u
window=${1:?window name}

keep_open() {
    exec "${SHELL:-bash}"
}

show_gpu() {
    local refresh=(watch -n 2)
    command -v watch >/dev/null || refresh=()
    if command -v nvidia-smi >/dev/null; then
        "${refresh[@]}" nvidia-smi
    elif command -v rocm-smi >/dev/null; then
        "${refresh[@]}" rocm-smi
    elif command -v amd-smi >/dev/null; then
        "${refresh[@]}" amd-smi monitor
    else
        echo "gpu: no nvidia-smi, rocm-smi or amd-smi on $(hostname): no GPU telemetry on this host"
    fi
}

show_cpu() {
    if command -v htop >/dev/null; then
        htop
    elif command -v top >/dev/null; then
        top
    else
        echo "cpu: neither htop nor top is installed on $(hostname)"
    fi
}

show_tensorboard() {
    local logdir=$1 port=$2
    if [ -z "$logdir" ]; then
        echo "tensorboard: off for this job (no tensorboard section in the job file)"
    elif ! command -v tensorboard >/dev/null; then
        echo "tensorboard: not installed on $(hostname) (pip install tensorboard); logs still go to $logdir"
    else
        mkdir -p -- "$logdir"
        # Loopback only: the controller reaches it through an SSH tunnel, nobody else at all.
        tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port"
        echo "tensorboard: exited with status $?"
    fi
}

case "$window" in
    gpu) show_gpu ;;
    cpu) show_cpu ;;
    tensorboard) show_tensorboard "${2:-}" "${3:-6006}" ;;
    shell) ;;
    *) echo "window.sh: unknown window '$window'" >&2 ;;
esac
keep_open
