// The documented ClusterRole grants exactly what the informers use: get/list/watch on the
// watched resources, nothing more, so a missing or extra permission fails here, not in a cluster.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAllYaml } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { watchedResources } from '../src/cluster-watch.js';

const rbacPath = join(dirname(fileURLToPath(import.meta.url)), '../../../infra/k8s/base/tagger-rbac.yaml');

describe('tagger RBAC', () => {
  it('grants get/list/watch on exactly the resources the informers watch', () => {
    const documents = loadAllYaml(readFileSync(rbacPath, 'utf8')) as { kind: string; rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }[];
    const role = documents.find((d) => d.kind === 'ClusterRole')!;
    const granted = role.rules!.flatMap((rule) => {
      expect([...rule.verbs].sort()).toEqual(['get', 'list', 'watch']);
      return rule.resources;
    });
    expect(granted.sort()).toEqual([...watchedResources].sort());
  });
});
