#!/usr/bin/env bash
# Makes the two TLS Secrets the Kustomize base mounts — kappa-server-tls (NATS, Redis, the KubeTags
# and Observer gRPC servers) and kappa-client-tls (every kappa service and the CLI) — from a local
# CA made by tools/make-ca.sh, with the DNS names of kappa's Services in the server certificate.
# Prints them as YAML (apply with kubectl apply -f -); DIR keeps the CA and the CLI's client files.
# Usage: tools/make-k8s-tls.sh DIR [NAMESPACE]     e.g. tools/make-k8s-tls.sh ~/.kappa/prod | kubectl apply -f -
set -euo pipefail
dir=${1:?usage: tools/make-k8s-tls.sh DIR [NAMESPACE]}
namespace=${2:-kappa}
here=$(cd "$(dirname "$0")" && pwd)

sans=()
for service in kappa-nats kappa-nats-headless kappa-redis kappa-k8s-tagger kappa-exporter kappa-console; do
  sans+=("DNS:$service" "DNS:$service.$namespace" "DNS:$service.$namespace.svc" "DNS:$service.$namespace.svc.cluster.local")
done
# The NATS pods by their stable names (kappa-nats-0.kappa-nats-headless...), and the nodes of
# components/redis-cluster (kappa-redis-cluster-0.kappa-redis-cluster...).
sans+=("DNS:*.kappa-nats-headless.$namespace.svc" "DNS:*.kappa-nats-headless.$namespace.svc.cluster.local")
sans+=("DNS:*.kappa-redis-cluster.$namespace.svc" "DNS:*.kappa-redis-cluster.$namespace.svc.cluster.local")
bash "$here/make-ca.sh" "$dir" "${sans[@]}" >&2

secret() { # name, certificate, key
  kubectl create secret generic "$1" --namespace "$namespace" --type kubernetes.io/tls \
    --from-file=ca.crt="$dir/ca.pem" --from-file=tls.crt="$dir/$2" --from-file=tls.key="$dir/$3" \
    --dry-run=client -o yaml
}
secret kappa-server-tls server.pem server.key
echo ---
secret kappa-client-tls client.pem client.key
echo "kappa: the CLI's files (--tls-ca, --tls-cert, --tls-key) are $dir/ca.pem, client.pem, client.key; keep ca.key safe" >&2
