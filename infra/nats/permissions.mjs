// Who may do what on the bus: one NATS identity per service (and, for the node agents, per node),
// each allowed exactly the subjects its work needs. nats-server enforces it; this table is the one
// source for `npm run up` (tools/up-plan.mjs), the Kustomize credentials script
// (tools/k8s-nats-credentials.mjs) and the tests. docs/architecture.md has the same table in prose.
//
// Everything not allowed is refused. Four things make that hold for JetStream:
// - each identity has its own inbox prefix, `_INBOX_<its nkey public key>` (libs/bus derives it from
//   the seed): replies to its requests (publish acks, pulled messages) go there, and no other
//   identity may subscribe to it;
// - consumers are named, and an identity may only create, read, pull from and ack its own;
// - the consumer-create subject carries its filter (nats-server ≥ 2.9), so an identity can only
//   create a consumer on the subjects it consumes;
// - stream create, update, delete and purge, direct gets and message deletes are the admin's alone.

export const FLOW_STREAM = 'KAPPA_FLOWS';
export const DLQ_STREAM = 'KAPPA_DLQ';
/** The k8s-tagger's keyed state (libs/bus TAGGER_STATE_STORE): created by the admin. */
export const TAGGER_STATE_STREAM = 'KAPPA_TAGGER_STATE';
export const TAGGER_STATE_PREFIX = 'kappa.state.k8s-tagger';

/** A subject token as libs/bus makes it: no dots, spaces or wildcards. */
export function subjectToken(value) {
  return value.replace(/[.\s*>]/g, '_');
}

/** The inbox prefix of an nkey identity, as libs/bus derives it from the seed (natsInboxPrefix). */
export function inboxPrefix(publicKey) {
  return `_INBOX_${publicKey}`;
}

const api = (rest) => `$JS.API.${rest}`;

/** Publish subjects that let a client consume through one named durable on a stream. */
function consumerOf(stream, durable, filter) {
  return [
    api(`CONSUMER.CREATE.${stream}.${durable}.${filter}`),
    api(`CONSUMER.INFO.${stream}.${durable}`),
    api(`CONSUMER.MSG.NEXT.${stream}.${durable}`),
    `$JS.ACK.${stream}.${durable}.>`,
  ];
}

/** What every service needs: JetStream's account info, and stream info (admission, lag). */
const common = [api('INFO'), api(`STREAM.INFO.${FLOW_STREAM}`), api(`STREAM.INFO.${DLQ_STREAM}`)];

/**
 * The identities of one kappa installation.
 * @param {{ nodes: string[], partitions: number }} layout
 * @returns {{ name: string, role: string, node?: string }[]}
 */
export function identities({ nodes }) {
  return [
    { name: 'admin', role: 'admin' },
    { name: 'cli', role: 'cli' },
    { name: 'k8s-tagger', role: 'k8s-tagger' },
    { name: 'joiner', role: 'joiner' },
    { name: 'exporter', role: 'exporter' },
    ...nodes.flatMap((node) => [
      { name: `capture-${subjectToken(node)}`, role: 'capture', node },
      { name: `process-enricher-${subjectToken(node)}`, role: 'process-enricher', node },
    ]),
  ];
}

/**
 * nats-server permissions of an identity: { publish: { allow }, subscribe: { allow } }.
 * @param {{ name: string, role: string, node?: string }} identity
 * @param {string} publicKey its nkey public key (U...)
 * @param {{ partitions: number }} layout
 */
export function permissions(identity, publicKey, { partitions }) {
  const inbox = `${inboxPrefix(publicKey)}.>`;
  const node = identity.node === undefined ? undefined : subjectToken(identity.node);
  const ps = Array.from({ length: partitions }, (_, k) => `p${k}`);
  switch (identity.role) {
    case 'admin':
      return { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };
    case 'cli':
      // `kappa status`: heartbeats and the DLQ's per-subject counts. Nothing of the flows.
      return { publish: { allow: [api('INFO'), api(`STREAM.INFO.${DLQ_STREAM}`)] }, subscribe: { allow: ['kappa.status.>', inbox] } };
    case 'capture':
      return {
        publish: { allow: [...common, `kappa.flow.captured.${node}`, `kappa.status.capture.${node}`] },
        subscribe: { allow: [inbox] },
      };
    case 'process-enricher':
      return {
        publish: {
          allow: [
            ...common,
            ...consumerOf(FLOW_STREAM, `process-enricher-${node}`, `kappa.flow.captured.${node}`),
            `kappa.flow.enriched.*.${node}`,
            'kappa.dlq.process-enricher',
            `kappa.status.process-enricher.${node}`,
          ],
        },
        subscribe: { allow: [inbox] },
      };
    case 'k8s-tagger':
      return {
        publish: {
          allow: [
            ...common,
            ...consumerOf(FLOW_STREAM, 'k8s-tagger', 'kappa.flow.enriched.>'),
            'kappa.flow.tagged.*',
            'kappa.dlq.k8s-tagger',
            'kappa.status.k8s-tagger.*',
            // Its own state (pods and Services it knew), written by key and read back at start
            // through an ordered consumer; the stream holds nothing else.
            api(`STREAM.INFO.${TAGGER_STATE_STREAM}`),
            api(`CONSUMER.CREATE.${TAGGER_STATE_STREAM}.>`),
            api(`CONSUMER.INFO.${TAGGER_STATE_STREAM}.*`),
            api(`CONSUMER.MSG.NEXT.${TAGGER_STATE_STREAM}.*`),
            api(`CONSUMER.DELETE.${TAGGER_STATE_STREAM}.*`),
            `${TAGGER_STATE_PREFIX}.>`,
          ],
        },
        subscribe: { allow: [inbox] },
      };
    case 'joiner':
      return {
        publish: {
          allow: [
            ...common,
            // One durable per partition; the owner of a partition's lease recreates it at takeover.
            ...ps.flatMap((p) => [...consumerOf(FLOW_STREAM, `joiner-${p}`, `kappa.flow.tagged.${p}`), api(`CONSUMER.DELETE.${FLOW_STREAM}.joiner-${p}`)]),
            // tagged.p<k>: the clock tick an idle partition's owner sends itself.
            'kappa.flow.tagged.*',
            'kappa.flow.joined.*',
            'kappa.dlq.joiner',
            'kappa.status.joiner.*',
          ],
        },
        subscribe: { allow: [inbox] },
      };
    case 'exporter':
      return {
        publish: {
          allow: [...common, ...consumerOf(FLOW_STREAM, 'exporter', 'kappa.flow.joined.>'), 'kappa.dlq.exporter', 'kappa.status.exporter.*'],
        },
        // The Observer's GetStatus (the console's health page) shows what `kappa status` shows.
        subscribe: { allow: [inbox, 'kappa.status.>'] },
      };
    default:
      throw new Error(`no permissions for role ${identity.role}`);
  }
}

/**
 * The `authorization { users = [...] }` block of nats.conf for these identities and their nkey
 * public keys (U...). Each user is an nkey: the server holds no secret.
 * @param {{ name: string, role: string, node?: string }[]} ids
 * @param {Record<string, string>} publicKeys identity name → nkey public key
 * @param {{ partitions: number }} layout
 */
export function natsAuthorization(ids, publicKeys, layout) {
  const q = (s) => JSON.stringify(s);
  const list = (xs) => `[${xs.map(q).join(', ')}]`;
  const users = ids.map((id) => {
    const key = publicKeys[id.name];
    if (!key) throw new Error(`no nkey for identity ${id.name}`);
    const p = permissions(id, key, layout);
    return `    # ${id.name}\n    { nkey: ${q(key)}, permissions: { publish: { allow: ${list(p.publish.allow)} }, subscribe: { allow: ${list(p.subscribe.allow)} } } }`;
  });
  return `authorization {\n  users = [\n${users.join('\n')}\n  ]\n}\n`;
}
