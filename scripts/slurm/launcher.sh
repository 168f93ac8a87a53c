# shellcheck shell=bash
# How the training stages start on a SLURM allocation: sourced by repro.sbatch and
# accelerate_node.sh (and by tests/test_profiles.py, with a fake environment). No side effects.
#
# dvc.yaml runs every training stage as `${train.launcher} stages/<stage>.py`. On SLURM the
# launcher is the same string on every cluster shape (so DVC sees the same param):
#
#     train.launcher = srun --ntasks-per-node=1 --kill-on-bad-exit=1 scripts/slurm/accelerate_node.sh
#
# `dvc exp run` (on the batch host) runs that; srun starts one task per node of the job; each
# task (accelerate_node.sh) asks `sbm_accelerate_cmd` for its own `accelerate launch` line,
# built from SLURM's variables in that task:
#
#     SLURM_NNODES        nodes in the job                       -> --num_machines
#     SLURM_PROCID        this task's rank; one task per node,
#                         so the node's rank 0..N-1              -> --machine_rank
#     GPUs per node       SBM_GPUS_PER_NODE, else SLURM_GPUS_ON_NODE, else SLURM_GPUS_PER_NODE
#                         ("4" or "gpu:a100:4"), else `nvidia-smi -L` -> --num_processes = nodes × GPUs
#     the first node      SBM_MAIN_HOST, else the first line of
#                         `scontrol show hostnames "$SLURM_JOB_NODELIST"` -> --main_process_ip
#     SBM_MAIN_PORT       rendezvous port (default 29500; a fixed port: 0 only works on one node)

SBM_TRAIN_LAUNCHER="srun --ntasks-per-node=1 --kill-on-bad-exit=1 scripts/slurm/accelerate_node.sh"

sbm_main_host() {
    if [ -n "${SBM_MAIN_HOST:-}" ]; then
        echo "$SBM_MAIN_HOST"
        return
    fi
    local host
    host=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?sbm_main_host: SLURM_JOB_NODELIST is not set: not inside a SLURM job}" | head -n 1)
    if [ -z "$host" ]; then
        echo "sbm_main_host: scontrol listed no host for SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST" >&2
        return 1
    fi
    echo "$host"
}

sbm_gpus_per_node() {
    local g="${SBM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}}"
    g="${g##*:}"  # gres form gpu:a100:4 -> 4
    if [ -z "$g" ]; then
        g=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    fi
    if ! [ "$g" -ge 1 ] 2>/dev/null; then
        echo "sbm_gpus_per_node: cannot tell the GPUs per node (got '${g}'); request GPUs (--gpus-per-node) or set SBM_GPUS_PER_NODE" >&2
        return 1
    fi
    echo "$g"
}

# This node's `accelerate launch` options (the stage script and its arguments follow them).
sbm_accelerate_cmd() {
    local nodes="${SLURM_NNODES:?sbm_accelerate_cmd: SLURM_NNODES is not set}"
    local rank="${SLURM_PROCID:?sbm_accelerate_cmd: SLURM_PROCID is not set}"
    local gpus host
    gpus=$(sbm_gpus_per_node) || return 1
    if [ "$nodes" -eq 1 ] && [ "$gpus" -eq 1 ]; then
        echo "accelerate launch --num_processes 1"
        return
    fi
    host=$(sbm_main_host) || return 1
    echo "accelerate launch --multi_gpu --num_machines $nodes --machine_rank $rank" \
         "--num_processes $((nodes * gpus)) --main_process_ip $host --main_process_port ${SBM_MAIN_PORT:-29500}"
}
