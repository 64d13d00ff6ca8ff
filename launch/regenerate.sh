#!/bin/sh
# Re-render the example manifests in this directory from the exit-code contract.
# tests/k8s/test_k8s_cli.py runs every `supervise` line below and fails when a file differs.
set -eu
cd "$(dirname "$0")"
supervise k8s job --name llama --image registry.example.com/ml/train:v1 --nnodes 2 --nproc-per-node 8 --checkpoint-dir s3://checkpoints/llama --grace-period 120 --shm-size 64Gi -- train.py --config llama.yaml > job.yaml
supervise k8s job --name llama --image registry.example.com/ml/train:v1 --nnodes 2 --nproc-per-node 8 --checkpoint-dir s3://checkpoints/llama --grace-period 120 --shm-size 64Gi --restart-in-place HANG --restart-in-place INFRA_FAILED -- train.py --config llama.yaml > job-in-place.yaml
supervise k8s jobset --name llama --image registry.example.com/ml/train:v1 --nnodes 2 --nproc-per-node 8 --checkpoint-dir s3://checkpoints/llama --grace-period 120 --shm-size 64Gi --max-restarts 5 -- train.py --config llama.yaml > jobset.yaml
supervise k8s jobset --name llama --image registry.example.com/ml/train:v1 --nnodes 2 --nproc-per-node 8 --checkpoint-dir s3://checkpoints/llama --grace-period 120 --shm-size 64Gi --max-restarts 5 --restart-in-place HANG --restart-in-place INFRA_FAILED -- train.py --config llama.yaml > jobset-in-place.yaml
