#!/usr/bin/env bash
# The main job (python -m dask_dpsgd lda) on ONE Slurm allocation: the embedded local
# Dask cluster runs inside the job, on the cores Slurm booked for it. No dask-jobqueue
# needed. Submit it from the environment where dask-dpsgd is installed (sbatch passes
# your environment on) or activate that environment below; extra arguments go to the
# main job:
#
#     sbatch examples/slurm_job.sh --n-components 50 --max-iter 10
#     sbatch --cpus-per-task=16 --mem=32G examples/slurm_job.sh
#
# To spread one fit over several jobs (nodes) instead, see examples/slurm_submit.py.
#SBATCH --job-name=dask-dpsgd-lda
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=01:00:00
#SBATCH --output=dask-dpsgd-lda-%j.out
set -euo pipefail

# . "$HOME/dask-dpsgd/.venv/bin/activate"    # if not submitted from the environment

cpus="${SLURM_CPUS_PER_TASK:-1}"
# numba's thread pool gets the booked cores, no more (docs/design.rst, "Thread budget").
export NUMBA_NUM_THREADS="$cpus"
# One Dask thread per worker process, numba threads inside it: up to 4 cores per worker
# (the estimators' own default), given explicitly so that the layout follows the
# allocation even where Slurm does not bind the job to its CPUs.
threads=$(( cpus < 4 ? cpus : 4 ))
workers=$(( cpus / threads ))

echo "job ${SLURM_JOB_ID:-?} on $(hostname): ${cpus} CPUs -> ${workers} worker(s) x" \
     "${threads} numba thread(s)"
python -m dask_dpsgd lda --n-workers "$workers" --threads-per-worker "$threads" \
    --output "dask-dpsgd-lda-${SLURM_JOB_ID:-local}.json" "$@"
