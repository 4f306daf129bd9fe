#!/usr/bin/env node
// Makes the NATS identities of a kappa installation on Kubernetes: one nkey per cluster service
// (Secrets), one per node agent per node (files to place on each node), and the server's users
// with their permissions (infra/nats/permissions.mjs, the same table `npm run up` uses).
//
//   node tools/k8s-nats-credentials.mjs --out DIR --nodes "$(kubectl get nodes -o name | cut -d/ -f2 | paste -sd,)"
//   kubectl apply -f DIR/secrets.yaml
//   for each node N: copy DIR/nodes/N/*.nk to /var/lib/kappa/nats/ on N (root, mode 0600)
//   kubectl -n kappa exec kappa-nats-0 -- kill -HUP 1      # nats-server reloads its users
//
// Seeds already in DIR are kept, so a rerun adds nodes without touching anyone else; delete one
// seed file and rerun to rotate that identity alone (the others stay connected through the reload).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createUser, fromSeed } from '@nats-io/nkeys';
import { identities, natsAuthorization, subjectToken } from '../infra/nats/permissions.mjs';

/** The Secret name holding a cluster identity's seed (key seed.nk). */
export const secretName = (identity) => `kappa-nats-${identity}`;
/** Where a node identity's seed goes on its node (the agent's hostPath). */
export const NODE_CREDENTIALS_DIR = '/var/lib/kappa/nats';

function ensureSeed(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    const seed = new TextDecoder().decode(createUser().getSeed());
    writeFileSync(file, `${seed}\n`, { mode: 0o600 });
    return seed;
  }
}

/**
 * @param {{ out: string, nodes: string[], partitions: number, namespace: string }} options
 * @returns {{ secretsYaml: string, usersConf: string, nodeFiles: Record<string, string[]> }}
 */
export function makeCredentials({ out, nodes, partitions, namespace }) {
  const ids = identities({ nodes });
  const publicKeys = {};
  const seeds = {};
  const nodeFiles = {};
  mkdirSync(join(out, 'seeds'), { recursive: true, mode: 0o700 });
  for (const id of ids) {
    let file;
    if (id.node === undefined) file = join(out, 'seeds', `${id.name}.nk`);
    else {
      const dir = join(out, 'nodes', subjectToken(id.node));
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // The file name is the role: the DaemonSet reads capture.nk and process-enricher.nk.
      file = join(dir, `${id.role}.nk`);
      (nodeFiles[id.node] ??= []).push(file);
    }
    seeds[id.name] = ensureSeed(file);
    publicKeys[id.name] = fromSeed(new TextEncoder().encode(seeds[id.name])).getPublicKey();
  }
  const usersConf = natsAuthorization(ids, publicKeys, { partitions });
  const indent = (text, n) => text.replace(/^/gm, ' '.repeat(n)).trimEnd();
  const secret = (name, key, value, component) =>
    [
      'apiVersion: v1',
      'kind: Secret',
      'metadata:',
      `  name: ${name}`,
      `  namespace: ${namespace}`,
      '  labels:',
      '    app.kubernetes.io/name: kappa',
      `    app.kubernetes.io/component: ${component}`,
      'type: Opaque',
      'stringData:',
      `  ${key}: |`,
      indent(value, 4),
    ].join('\n');
  const docs = [secret('kappa-nats-users', 'users.conf', usersConf, 'nats')];
  for (const id of ids) if (id.node === undefined) docs.push(secret(secretName(id.name), 'seed.nk', `${seeds[id.name]}\n`, id.role === 'admin' ? 'infra' : id.role));
  const secretsYaml = `${docs.join('\n---\n')}\n`;
  writeFileSync(join(out, 'secrets.yaml'), secretsYaml, { mode: 0o600 });
  writeFileSync(join(out, 'users.conf'), usersConf, { mode: 0o600 });
  return { secretsYaml, usersConf, nodeFiles };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      nodes: { type: 'string' },
      partitions: { type: 'string', default: '16' },
      namespace: { type: 'string', default: 'kappa' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const usage = 'usage: node tools/k8s-nats-credentials.mjs --out DIR --nodes NODE[,NODE...] [--partitions 16] [--namespace kappa]';
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const nodes = (values.nodes ?? '').split(',').map((n) => n.trim()).filter(Boolean);
  const partitions = Number(values.partitions);
  if (!values.out || nodes.length === 0 || !Number.isInteger(partitions) || partitions < 1) {
    console.error(`k8s-nats-credentials: ${!values.out ? '--out is required' : nodes.length === 0 ? '--nodes needs at least one node name' : '--partitions must be a positive integer (the cluster\'s KAPPA_PARTITIONS)'}\n${usage}`);
    process.exit(2);
  }
  const out = resolve(values.out);
  const { nodeFiles } = makeCredentials({ out, nodes, partitions, namespace: values.namespace });
  console.log(`wrote ${join(out, 'secrets.yaml')} (kubectl apply -f it) and the node agents' seeds:`);
  for (const [node, files] of Object.entries(nodeFiles)) console.log(`  ${node}: ${files.join(' ')} -> ${NODE_CREDENTIALS_DIR}/ on that node`);
}
