#!/bin/sh
# A stand-in for a legacy deploy script: it records what would be live.
set -eu
state="$PRODLINE_PARAM_DEMO_STATE/$PRODLINE_ENVIRONMENT"  # the demo_state parameter
case "$1" in
  plan) echo "would roll out checkout $PRODLINE_VERSION with $PRODLINE_PARAM_REPLICAS replicas" ;;
  migrate) echo "migrating checkout database for $PRODLINE_VERSION"; sleep 1 ;;
  rollout)
    mkdir -p "$state"
    echo "rolling out checkout $PRODLINE_VERSION ($PRODLINE_PARAM_REPLICAS replicas) to $PRODLINE_ENVIRONMENT, orders from $QUEUE_URL"
    sleep 1
    echo "$PRODLINE_VERSION" > "$state/checkout.version"
    if [ "$PRODLINE_PARAM_BREAK_IN" = "$PRODLINE_ENVIRONMENT" ]; then  # `make demo BREAK=production`
      echo "checkout $PRODLINE_VERSION crashes on start in $PRODLINE_ENVIRONMENT" >&2; exit 3
    fi
    echo "checkout $PRODLINE_VERSION is live in $PRODLINE_ENVIRONMENT" ;;
  *) echo "usage: deploy.sh plan|migrate|rollout" >&2; exit 64 ;;
esac
