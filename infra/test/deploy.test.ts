// `nx run-many -t deploy` in dry-run mode: prints, per deploy unit, the manifests it would apply
// for the chosen overlay — together exactly the rendered overlay, each object once — and touches
// no cluster (the kube context given does not exist: a real apply would fail on it).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, test } from 'vitest';
import type { KubeObject } from './manifests.js';
import { render, workspaceRoot } from './manifests.js';

const bin = resolve(workspaceRoot, 'node_modules/.bin');
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `${bin}:${process.env.PATH ?? ''}`,
  NX_DAEMON: 'false',
  NX_NO_CLOUD: 'true',
  NX_TUI: 'false',
  KAPPA_DEPLOY_CONTEXT: 'kd-no-such-context',
};

/** The objects each unit's dry run printed, keyed by unit. */
function printedManifests(output: string): Map<string, KubeObject[]> {
  const units = new Map<string, KubeObject[]>();
  const pattern = /^# kappa deploy (\S+) \(dry run\)[^\n]*\n([\s\S]*?)^# end of kappa deploy \1$/gm;
  for (const match of output.matchAll(pattern)) {
    const objects = parseAllDocuments(match[2] ?? '')
      .map((doc) => doc.toJS() as KubeObject | null)
      .filter((o): o is KubeObject => o !== null);
    units.set(match[1] ?? '', objects);
  }
  return units;
}

const key = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

describe('nx run-many -t deploy', () => {
  test('with KAPPA_DEPLOY_DRY_RUN=1 prints every object of the chosen overlay exactly once, applying nothing', { timeout: 600_000 }, () => {
    const run = spawnSync('nx', ['run-many', '-t', 'deploy', '--outputStyle=static'], {
      cwd: workspaceRoot,
      env: { ...env, KAPPA_DEPLOY_DRY_RUN: '1', KAPPA_DEPLOY_OVERLAY: 'eks-calico' },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const units = printedManifests(run.stdout);
    expect([...units.keys()].sort()).toEqual(['capture', 'console', 'exporter', 'infra', 'joiner', 'k8s-tagger']);
    expect(run.stdout).toContain('# kappa deploy process-enricher: nothing of its own (it runs in the kappa-agent DaemonSet');
    expect(run.stdout).not.toMatch(/kubectl .*apply/);

    const printed = [...units.values()].flat().map(key).sort();
    const overlay = render('overlays/eks-calico').map(key).sort();
    expect(printed).toEqual(overlay);
    // The overlay's own settings are what would be applied: the Calico pattern, the EKS volume class.
    const config = [...units.get('infra')!].find((o) => o.kind === 'ConfigMap') as KubeObject & { data: Record<string, string> };
    expect(config.data.KAPPA_CAPTURE).toBe('cali.*|tun.*');
    expect(units.get('infra')!.map(key)).toContain('StorageClass//kappa-gp3');
    expect(units.get('capture')!.map(key)).toContain('DaemonSet/kappa/kappa-agent');

    // The namespace goes first: every service's deploy ran after @kappa/infra's.
    const order = [...run.stdout.matchAll(/^# kappa deploy ([\w-]+)/gm)].map((m) => m[1]);
    expect(order[0]).toBe('infra');
    expect(order.indexOf('process-enricher')).toBeGreaterThan(order.indexOf('capture'));
  });

  test('--dry-run on one unit prints only that unit, and no overlay is an error naming the overlays', () => {
    const joiner = spawnSync('node', ['tools/deploy.mjs', '--dry-run', 'joiner'], {
      cwd: workspaceRoot,
      env: { ...env, KAPPA_DEPLOY_OVERLAY: 'gke' },
      encoding: 'utf8',
    });
    expect(joiner.status, joiner.stderr).toBe(0);
    expect(printedManifests(joiner.stdout).get('joiner')?.map(key)).toEqual([
      'Service/kappa/kappa-joiner',
      'Deployment/kappa/kappa-joiner',
      'PodDisruptionBudget/kappa/kappa-joiner',
    ]);

    const { KAPPA_DEPLOY_OVERLAY: _unset, ...withoutOverlay } = env;
    const missing = spawnSync('node', ['tools/deploy.mjs', '--dry-run', 'joiner'], { cwd: workspaceRoot, env: withoutOverlay, encoding: 'utf8' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('set KAPPA_DEPLOY_OVERLAY to one of: aks, aks-calico, calico, eks, eks-calico, eks-weave, flannel, gke, weave');
  });

  test('without dry run it applies through kubectl with the configured context', () => {
    const apply = spawnSync('node', ['tools/deploy.mjs', 'exporter'], {
      cwd: workspaceRoot,
      env: { ...env, KAPPA_DEPLOY_OVERLAY: 'weave' },
      encoding: 'utf8',
    });
    // No cluster here: kubectl is really called, and refuses the context that does not exist.
    expect(apply.status).toBe(1);
    expect(apply.stdout).toContain('kubectl --context kd-no-such-context apply -f -');
    expect(apply.stderr).toContain('context "kd-no-such-context" does not exist');
  });
});
