#!/usr/bin/env bash
# Opt-in end-to-end run of the Fleetshift chart on kind (needs Docker, kind, kubectl and
# helm; not run in CI, which has no Docker). From the repository root:
#
#   make venv && hack/kind-e2e.sh            # KEEP_CLUSTER=1 keeps the cluster afterwards
#
# It creates the cluster from kind-config.yaml, builds and loads the operator and runtime
# images, installs kube-prometheus-stack and the chart (2 replicas), serves two small
# XGBoost models from an in-cluster HTTP server, creates an Endpoint on model v1, updates
# it to v2 with a canary and waits for the rollout to succeed. It prints each step.
set -euo pipefail

CLUSTER=${CLUSTER:-fleetshift}
VERSION=${VERSION:-0.1.0}
NAMESPACE=${NAMESPACE:-fleetshift-demo}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
export KUBECONFIG=${WORK}/kubeconfig

step() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "missing: $1 ($2)" >&2; exit 2; }; }

cleanup() {
  status=$?
  if [[ $status -ne 0 ]]; then
    step "failed; state for debugging"
    kubectl get fsep,deploy,pods -n "$NAMESPACE" -o wide || true
    kubectl logs -n fleetshift-system deploy/fleetshift --tail=50 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$CLUSTER" || true
  else
    echo "cluster kept: export KUBECONFIG=$KUBECONFIG"
  fi
  exit $status
}

need docker "https://docs.docker.com/get-docker/"
need kind "go install sigs.k8s.io/kind@latest"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
[[ -x "$PYTHON" ]] || { echo "run 'make venv' first (it trains the demo models)" >&2; exit 2; }

step "kind create cluster --config kind-config.yaml"
kind create cluster --name "$CLUSTER" --config kind-config.yaml --kubeconfig "$KUBECONFIG" --wait 120s
trap cleanup EXIT

step "build and load the images"
docker build -f operator/Dockerfile -t "ghcr.io/fleetshift/operator:${VERSION}" .
docker build -f runtime/Dockerfile -t "ghcr.io/fleetshift/runtime:${VERSION}" .
kind load docker-image --name "$CLUSTER" "ghcr.io/fleetshift/operator:${VERSION}" "ghcr.io/fleetshift/runtime:${VERSION}"

step "install kube-prometheus-stack (Prometheus, Grafana, prometheus-operator)"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo update prometheus-community >/dev/null
helm upgrade --install monitoring prometheus-community/kube-prometheus-stack \
  --namespace monitoring --create-namespace --wait --timeout 10m \
  --set alertmanager.enabled=false \
  --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
  --set grafana.sidecar.dashboards.searchNamespace=ALL

step "helm install fleetshift (2 replicas, monitoring on)"
helm upgrade --install fleetshift charts/fleetshift \
  --namespace fleetshift-system --create-namespace --wait --timeout 5m \
  --set replicaCount=2 \
  --set prometheus.url=http://prometheus-operated.monitoring:9090 \
  --set serviceMonitor.enabled=true --set podMonitor.enabled=true \
  --set prometheusRule.enabled=true
kubectl -n fleetshift-system rollout status deployment/fleetshift --timeout=180s

step "train two small models and serve them over HTTP in $NAMESPACE"
"$PYTHON" - "$WORK" <<'PY'
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb

folder = Path(sys.argv[1])
rng = np.random.default_rng(7)
features = rng.normal(size=(500, 19))
labels = (features[:, 0] + features[:, 1] > 0).astype(int)
for version, rounds in (("v1", 5), ("v2", 10)):
    model = xgb.XGBClassifier(n_estimators=rounds, max_depth=3)
    model.fit(features, labels)
    model.save_model(folder / f"churn-{version}.ubj")
PY
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" create configmap models \
  --from-file=churn-v1.ubj="$WORK/churn-v1.ubj" --from-file=churn-v2.ubj="$WORK/churn-v2.ubj" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: models}
spec:
  selector: {matchLabels: {app: models}}
  template:
    metadata: {labels: {app: models}}
    spec:
      containers:
        - name: http
          image: python:3.11-slim-bookworm
          command: [python, -m, http.server, "8000", --directory, /models]
          ports: [{containerPort: 8000}]
          volumeMounts: [{name: models, mountPath: /models}]
      volumes: [{name: models, configMap: {name: models}}]
---
apiVersion: v1
kind: Service
metadata: {name: models}
spec:
  selector: {app: models}
  ports: [{port: 8000, targetPort: 8000}]
YAML
kubectl -n "$NAMESPACE" rollout status deployment/models --timeout=180s

endpoint() {  # endpoint <model version>
  sed -e "s#uri: s3://models/churn/v1/model.tar.gz#uri: http://models.${NAMESPACE}:8000/churn-$1.ubj#" \
      -e 's#waitIntervalSeconds: 300#waitIntervalSeconds: 30#' \
      -e 's#terminationWaitSeconds: 120#terminationWaitSeconds: 10#' \
      examples/churn-baseline.yaml
}

step "apply the baseline Endpoint (model v1) and wait for InService"
endpoint v1 | kubectl -n "$NAMESPACE" apply -f -
kubectl -n "$NAMESPACE" wait fsep/churn --for=jsonpath='{.status.phase}'=InService --timeout=300s
kubectl -n "$NAMESPACE" get fsep churn

step "update to model v2: a canary of one instance, then the rest"
blue=$(kubectl -n "$NAMESPACE" get fsep churn -o jsonpath='{.status.activeRevision}')
endpoint v2 | kubectl -n "$NAMESPACE" apply -f -
deadline=$((SECONDS + 600))
until [[ "$(kubectl -n "$NAMESPACE" get fsep churn -o jsonpath='{.status.phase}/{.status.activeRevision}')" =~ ^InService/ ]] \
   && [[ "$(kubectl -n "$NAMESPACE" get fsep churn -o jsonpath='{.status.activeRevision}')" != "$blue" ]]; do
  (( SECONDS < deadline )) || { echo "the rollout did not finish in 10 minutes" >&2; exit 1; }
  kubectl -n "$NAMESPACE" get fsep churn --no-headers
  sleep 10
done
outcome=$(kubectl -n "$NAMESPACE" get fsep churn -o jsonpath='{.status.lastDeployment.outcome}')
[[ "$outcome" == Succeeded ]] || { echo "the rollout ended $outcome" >&2; exit 1; }
kubectl -n "$NAMESPACE" get fsep churn
kubectl -n "$NAMESPACE" get events --field-selector involvedObject.kind=Endpoint --sort-by=.lastTimestamp | tail -15

step "exactly one operator replica acted"
kubectl get clusterkopfpeering fleetshift -o jsonpath='{.status}'; echo
step "passed"
