#!/usr/bin/env bash
# Makes a local certificate authority and the TLS material kappa's links use: one server
# certificate (NATS, Redis, the KubeTags and Observer gRPC servers) and one client certificate
# (every service and the CLI, for mutual TLS). For `npm run up`, tests and trying the Kustomize
# base by hand; production clusters bring their own (cert-manager or a CA of their own).
# Usage: tools/make-ca.sh DIR [EXTRA_SAN...]   e.g. tools/make-ca.sh .kappa/tls DNS:nats.kappa.svc
# Writes DIR/ca.pem, DIR/ca.key, DIR/server.pem, DIR/server.key, DIR/client.pem, DIR/client.key.
# Keeps an existing CA in DIR (so certificates made earlier stay valid) and remakes the leaves.
set -euo pipefail
dir=${1:?usage: tools/make-ca.sh DIR [EXTRA_SAN...]}
shift
mkdir -p "$dir"
cd "$dir"
umask 077
days=${KAPPA_CA_DAYS:-825}

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for extra in "$@"; do sans="$sans,$extra"; done

ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
if [[ ! -s ca.pem || ! -s ca.key ]]; then
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days "$days" -subj '/CN=kappa local CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
fi

leaf() { # name, common name, extended key usage
  local name=$1 cn=$2 usage=$3
  openssl req "${ec[@]}" -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$sans" "$usage" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" \
    -days "$days" -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
# The server certificate is also a client's: NATS routes and the Redis Cluster bus and replication
# present it to the other servers.
leaf server kappa-server serverAuth,clientAuth
leaf client kappa-client clientAuth
rm -f ca.srl
# Readable by the services' own user in containers; the keys stay private to the owner.
chmod 644 ca.pem server.pem client.pem
echo "kappa: TLS material in $PWD (ca.pem, server.pem/key, client.pem/key)"
