#!/usr/bin/env bash
# Builds Dockerfile.slim with Cloud Build (cloudbuild_slim.yaml) and deploys N Cloud Run services,
# transcriber-slim-1..N, one NVIDIA L4 each, then prints their URLs as one TRANSCRIBER_ENDPOINTS line.
#
#   scripts/deploy.sh --project my-project [--region europe-west4] [--count 4] [--model large-v3-turbo]
#                     [--max-streams 8] [--min-instances 0] [--repository transcriber] [--image transcriber-slim]
#                     [--tag TAG] [--skip-build] [--allow-unauthenticated] [--dry-run]
#
# --dry-run prints every gcloud command instead of running it. Services are authenticated unless
# --allow-unauthenticated is given (callers then need roles/run.invoker and an ID token).
set -euo pipefail
cd "$(dirname "$0")/.."

project=${GOOGLE_CLOUD_PROJECT:-}
region=europe-west4
count=4
repository=transcriber
image=transcriber-slim
model=large-v3-turbo
max_streams=8
min_instances=0
tag=""
build=1
public=0
dry_run=0

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
needs_value() { [ $# -ge 2 ] || { echo "deploy.sh: $1 needs a value" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
    case "$1" in
        --project) needs_value "$@"; project=$2; shift 2 ;;
        --region) needs_value "$@"; region=$2; shift 2 ;;
        --count) needs_value "$@"; count=$2; shift 2 ;;
        --repository) needs_value "$@"; repository=$2; shift 2 ;;
        --image) needs_value "$@"; image=$2; shift 2 ;;
        --model) needs_value "$@"; model=$2; shift 2 ;;
        --max-streams) needs_value "$@"; max_streams=$2; shift 2 ;;
        --min-instances) needs_value "$@"; min_instances=$2; shift 2 ;;
        --tag) needs_value "$@"; tag=$2; shift 2 ;;
        --skip-build) build=0; shift ;;
        --allow-unauthenticated) public=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "deploy.sh: unknown option $1" >&2; usage 2 ;;
    esac
done

[ -n "$project" ] || { echo "deploy.sh: give --project (or set GOOGLE_CLOUD_PROJECT)" >&2; exit 2; }
[[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "deploy.sh: --count must be a positive number" >&2; exit 2; }
[[ "$max_streams" =~ ^[1-9][0-9]*$ ]] || { echo "deploy.sh: --max-streams must be a positive number" >&2; exit 2; }
if [ -z "$tag" ]; then
    tag=$(git rev-parse HEAD 2>/dev/null || date -u +manual-%Y%m%d%H%M%S)
    # The build uploads the working tree: a tag must not claim a commit the image does not match.
    git diff --quiet HEAD 2>/dev/null || tag="${tag}-dirty-$(date -u +%Y%m%d%H%M%S)"
fi
image_path="${region}-docker.pkg.dev/${project}/${repository}/${image}"

run() {  # prints the command in --dry-run, runs it otherwise
    if [ "$dry_run" = 1 ]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
}

if [ "$build" = 1 ]; then
    if [ "$dry_run" = 1 ] || ! gcloud artifacts repositories describe "$repository" --project "$project" \
            --location "$region" >/dev/null 2>&1; then
        run gcloud artifacts repositories create "$repository" --project "$project" --location "$region" \
            --repository-format docker --description "transcriber images"
    fi
    run gcloud builds submit --project "$project" --config cloudbuild_slim.yaml \
        --substitutions "_REGION=${region},_REPOSITORY=${repository},_IMAGE=${image},_MODEL=${model},COMMIT_SHA=${tag}" .
fi

access=--no-allow-unauthenticated
[ "$public" = 1 ] && access=--allow-unauthenticated
urls=()
for index in $(seq 1 "$count"); do
    service="transcriber-slim-${index}"
    # Cloud Run must not queue for us: a little above the server's own stream limit, so that the
    # server answers RESOURCE_EXHAUSTED and the SDK moves the stream to another endpoint.
    run gcloud run deploy "$service" --project "$project" --region "$region" --image "${image_path}:${tag}" \
        --gpu 1 --gpu-type nvidia-l4 --no-gpu-zonal-redundancy --cpu 4 --memory 16Gi \
        --min-instances "$min_instances" --max-instances 1 --concurrency $((max_streams + 2)) \
        --use-http2 --timeout 3600 --no-cpu-throttling --cpu-boost --port 8080 \
        --set-env-vars "TRANSCRIBER_MAX_STREAMS=${max_streams},TRANSCRIBER_GRACE_S=8,TRANSCRIBER_REFLECTION=false" \
        --startup-probe "grpc.port=8080,grpc.service=transcriber.v1.Transcriber,periodSeconds=5,failureThreshold=48,timeoutSeconds=3" \
        "$access"
    if [ "$dry_run" = 1 ]; then
        run gcloud run services describe "$service" --project "$project" --region "$region" --format 'value(status.url)'
        urls+=("<url of ${service}>")
    else
        urls+=("$(gcloud run services describe "$service" --project "$project" --region "$region" \
            --format 'value(status.url)')")
    fi
done

endpoints=$(IFS=,; echo "${urls[*]}")
echo "TRANSCRIBER_ENDPOINTS=${endpoints}"
