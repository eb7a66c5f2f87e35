#!/bin/sh
# The cascade's threshold, from development documents the comparison does not score: the rest of each task's
# slice (ARC-Easy 250-499, ARC-Challenge 250-298, MMLU 250-284, HellaSwag 250-499). Resumable.
set -e
cd "$(dirname "$0")"
fslm calibrate cascade.yaml --share 0.95 --output calibration --dtype float32 \
    --tasks local_arc_easy,local_arc_challenge,local_mmlu,local_hellaswag \
    --documents local_arc_easy=250-500 --documents local_arc_challenge=250-299 \
    --documents local_mmlu=250-285 --documents local_hellaswag=250-500
