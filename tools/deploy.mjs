// `nx run-many -t deploy`: each deploy unit applies its own part of the chosen Kustomize overlay,
// so the overlay is applied once in all, each object by exactly one unit. The units are the
// `app.kubernetes.io/component` labels of infra/k8s: @kappa/infra applies infra, nats and redis
// (namespace, config, credentials, storage); @kappa/capture the agent DaemonSet (capture and
// process-enricher share its pods; process-enricher's deploy depends on capture's); k8s-tagger,
// joiner and exporter their own. Every service's deploy depends on @kappa/infra's (namespace first).
//
//   KAPPA_DEPLOY_OVERLAY=eks-calico   overlay under infra/k8s/overlays (or a path to one)   required
//   KAPPA_DEPLOY_CONTEXT=prod-eu      kubectl context (default: kubectl's current context)
//   KAPPA_DEPLOY_DRY_RUN=1 | --dry-run  print the manifests that would be applied; touch no cluster
//
//   node tools/deploy.mjs [--dry-run] [unit]     (unit: default from the package.json in the cwd)
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';

const root = resolve(import.meta.dirname, '..');
const overlaysDir = join(root, 'infra/k8s/overlays');

/** deploy unit (npm package name without @kappa/) → component labels it applies */
export const deployUnits = {
  infra: ['infra', 'nats', 'redis'],
  capture: ['agent'],
  'process-enricher': [],
  'k8s-tagger': ['k8s-tagger'],
  joiner: ['joiner'],
  exporter: ['exporter'],
  console: ['console'],
};

class DeployError extends Error {}

function fail(message) {
  throw new DeployError(message);
}

function overlayPath(overlay) {
  if (!overlay) {
    const names = readdirSync(overlaysDir).sort().join(', ');
    fail(`set KAPPA_DEPLOY_OVERLAY to one of: ${names} (or a path to a kustomization)`);
  }
  const path = isAbsolute(overlay) || overlay.includes('/') ? resolve(overlay) : join(overlaysDir, overlay);
  if (!existsSync(join(path, 'kustomization.yaml'))) fail(`KAPPA_DEPLOY_OVERLAY=${overlay}: no kustomization.yaml in ${path}`);
  return path;
}

/** Renders the overlay and returns its objects. */
export function renderOverlay(path) {
  const rendered = spawnSync('kubectl', ['kustomize', path], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (rendered.error) fail(`cannot run kubectl (needed to render the overlay): ${rendered.error.message}`);
  if (rendered.status !== 0) fail(`kubectl kustomize ${path} failed:\n${rendered.stderr}`);
  return parseAllDocuments(rendered.stdout).map((doc) => doc.toJS()).filter((object) => object);
}

/** The objects of one unit; throws when an object belongs to no unit (it would never be applied). */
export function objectsOfUnit(objects, unit) {
  const known = new Set(Object.values(deployUnits).flat());
  for (const object of objects) {
    const component = object.metadata?.labels?.['app.kubernetes.io/component'];
    if (!known.has(component)) {
      fail(`${object.kind}/${object.metadata?.name} has app.kubernetes.io/component=${component ?? '(none)'}, which no deploy unit applies`);
    }
  }
  const components = new Set(deployUnits[unit]);
  return objects.filter((object) => components.has(object.metadata.labels['app.kubernetes.io/component']));
}

function main(argv) {
  const dryRun = argv.includes('--dry-run') || /^(1|true|yes)$/i.test(process.env.KAPPA_DEPLOY_DRY_RUN ?? '');
  const named = argv.filter((a) => !a.startsWith('--'))[0];
  const unit = named ?? JSON.parse(readFileSync('package.json', 'utf8')).name.replace(/^@kappa\//, '');
  if (!(unit in deployUnits)) fail(`unknown deploy unit '${unit}'; one of ${Object.keys(deployUnits).join(', ')}`);
  const overlay = process.env.KAPPA_DEPLOY_OVERLAY;
  const path = overlayPath(overlay);
  const context = process.env.KAPPA_DEPLOY_CONTEXT;
  const objects = objectsOfUnit(renderOverlay(path), unit);
  const where = `overlay ${overlay}, context ${context ?? '(current)'}`;
  if (objects.length === 0) {
    console.log(`# kappa deploy ${unit}: nothing of its own (${unit === 'process-enricher' ? 'it runs in the kappa-agent DaemonSet, applied by @kappa/capture' : 'no objects'}); ${where}`);
    return;
  }
  const manifest = objects.map((object) => `---\n${stringify(object, { lineWidth: 0 })}`).join('');
  const summary = objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ');
  if (dryRun) {
    console.log(`# kappa deploy ${unit} (dry run): would apply ${objects.length} objects with ${where}: ${summary}`);
    process.stdout.write(manifest);
    console.log(`# end of kappa deploy ${unit}`);
    return;
  }
  const args = [...(context ? ['--context', context] : []), 'apply', '-f', '-'];
  console.log(`kappa deploy ${unit}: kubectl ${args.join(' ')} (${where}): ${summary}`);
  const applied = spawnSync('kubectl', args, { input: manifest, stdio: ['pipe', 'inherit', 'inherit'] });
  if (applied.status !== 0) fail(`kubectl apply failed for ${unit} (exit ${applied.status ?? applied.signal})`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    main(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof DeployError)) throw error;
    console.error(`kappa deploy: ${error.message}`);
    process.exit(1);
  }
}
