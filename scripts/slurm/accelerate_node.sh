#!/usr/bin/env bash
# One SLURM task per node: start this node's share of a training stage under accelerate.
#     accelerate_node.sh stages/train_score.py [args...]
# Started by `srun` through train.launcher (see launcher.sh); runs in the submit directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launcher.sh"
cmd=$(sbm_accelerate_cmd)
echo "accelerate_node.sh: $(hostname): $cmd $*" >&2
# shellcheck disable=SC2086  # $cmd is a word list
exec $cmd "$@"
