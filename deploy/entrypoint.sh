#!/bin/sh
# SageMaker runs `<image> train` for a training job and `<image> serve` on an endpoint; anything else
# (kiln server start, kiln serve, kiln jobs serve in deploy/compose.yaml) runs as given.
set -e
case "$1" in
  train|serve) exec python -m cloud.container "$@" ;;
  *) exec "$@" ;;
esac
