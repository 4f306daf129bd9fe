// The Kubernetes objects that describe the simulated pods, as the test API server serves them.
import type { KubeApiServer } from '@kappa/testing';
import type { Pod, Topology } from './topology.js';

const uid = (seed: string) => {
  let h = 0;
  for (const c of seed) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  const hex = h.toString(16).padStart(8, '0');
  return `${hex}-0000-4000-8000-${hex}${hex.slice(0, 4)}`;
};

export function describeCluster(api: KubeApiServer, topology: Topology): void {
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system', uid: uid('kube-system') } });
  const namespaces = new Set(topology.pods.map((p) => p.namespace));
  for (const ns of namespaces) api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, uid: uid(`ns-${ns}`) } });
  for (const node of Object.values(topology.nodes)) {
    api.apply({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: node.name, uid: uid(node.name), labels: { 'kubernetes.io/hostname': node.name } },
      // The pod networks kubelet's IPAM hands out on this node (the tagger holds flows to an
      // unknown address in them instead of calling it external).
      spec: { podCIDR: node.subnet4, podCIDRs: [node.subnet4, `${node.gateway6.replace(/1$/, '')}/64`] },
      status: { addresses: [{ type: 'InternalIP', address: node.gateway4 }, { type: 'Hostname', address: node.name }] },
    });
  }
  const workloads = new Map<string, Pod[]>();
  for (const pod of topology.pods) workloads.set(`${pod.namespace}/${pod.workload}`, [...(workloads.get(`${pod.namespace}/${pod.workload}`) ?? []), pod]);
  for (const pods of workloads.values()) {
    const first = pods[0];
    if (!first) continue;
    const deploymentUid = uid(`deploy-${first.workload}`);
    const rsName = `${first.workload}-5d8f7c9b6`;
    const rsUid = uid(`rs-${first.workload}`);
    api.apply({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: first.workload, namespace: first.namespace, uid: deploymentUid, labels: first.labels },
      spec: { selector: { matchLabels: first.labels }, template: { metadata: { labels: first.labels } } },
    });
    api.apply({
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: rsName,
        namespace: first.namespace,
        uid: rsUid,
        labels: first.labels,
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: first.workload, uid: deploymentUid, controller: true }],
      },
      spec: { selector: { matchLabels: first.labels } },
    });
    for (const pod of pods) {
      api.apply({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: pod.name,
          namespace: pod.namespace,
          uid: pod.uid,
          labels: pod.labels,
          creationTimestamp: new Date(Date.now() - 3_600_000).toISOString(),
          ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rsName, uid: rsUid, controller: true }],
        },
        spec: { nodeName: pod.node, containers: [{ name: pod.containerName, image: 'kappa/test' }] },
        status: {
          phase: 'Running',
          hostIP: topology.nodes[pod.node].gateway4,
          podIP: pod.ipv4,
          podIPs: [{ ip: pod.ipv4 }, { ip: pod.ipv6 }],
          startTime: new Date(Date.now() - 3_600_000).toISOString(),
          containerStatuses: [{ name: pod.containerName, ready: true, containerID: `containerd://${pod.containerId}`, image: 'kappa/test', imageID: '', restartCount: 0, started: true }],
        },
      });
    }
  }
  const { service } = topology;
  api.apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: service.name, namespace: service.namespace, uid: uid('svc-api') },
    spec: { type: 'ClusterIP', clusterIP: service.ipv4, clusterIPs: [service.ipv4], selector: { app: 'api' }, ports: [{ name: 'http', protocol: 'TCP', port: service.port, targetPort: service.targetPort }] },
  });
  api.apply({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service.name}-x7k2p`, namespace: service.namespace, uid: uid('eps-api'), labels: { 'kubernetes.io/service-name': service.name } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [service.backend.ipv4], conditions: { ready: true }, nodeName: service.backend.node, targetRef: { kind: 'Pod', name: service.backend.name, namespace: service.backend.namespace, uid: service.backend.uid } }],
    ports: [{ name: 'http', protocol: 'TCP', port: service.targetPort }],
  });
  describeServiceKinds(api, topology);
}

/** The LoadBalancer (NodePort, ingress IP, external IP) and headless Services, and the
 *  hostNetwork DaemonSet pod, as the API server holds them once their controllers ran. */
function describeServiceKinds(api: KubeApiServer, topology: Topology): void {
  const { loadBalancer: lb, headless, hostNetwork: agent } = topology.kinds;
  api.apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: lb.name, namespace: lb.namespace, uid: uid(`svc-${lb.name}`) },
    spec: {
      type: 'LoadBalancer',
      clusterIP: lb.clusterIP,
      clusterIPs: [lb.clusterIP],
      externalIPs: [lb.externalIP],
      externalTrafficPolicy: 'Local',
      selector: { app: 'api' },
      ports: [{ name: 'http', protocol: 'TCP', port: lb.port, targetPort: lb.targetPort, nodePort: lb.nodePort }],
    },
    status: { loadBalancer: { ingress: [{ ip: lb.ingressIP, ipMode: 'VIP' }] } },
  });
  api.apply({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${lb.name}-q8w3e`, namespace: lb.namespace, uid: uid(`eps-${lb.name}`), labels: { 'kubernetes.io/service-name': lb.name } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [lb.backend.ipv4], conditions: { ready: true }, nodeName: lb.backend.node, targetRef: { kind: 'Pod', name: lb.backend.name, namespace: lb.backend.namespace, uid: lb.backend.uid } }],
    ports: [{ name: 'http', protocol: 'TCP', port: lb.targetPort }],
  });
  const webPods = topology.pods.filter((p) => p.labels.app === headless.app);
  api.apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: headless.name, namespace: headless.namespace, uid: uid(`svc-${headless.name}`) },
    spec: { type: 'ClusterIP', clusterIP: 'None', clusterIPs: ['None'], selector: { app: headless.app }, ports: [{ name: 'peer', protocol: 'TCP', port: headless.port, targetPort: headless.port }] },
  });
  api.apply({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${headless.name}-m2n4b`, namespace: headless.namespace, uid: uid(`eps-${headless.name}`), labels: { 'kubernetes.io/service-name': headless.name } },
    addressType: 'IPv4',
    endpoints: webPods.map((p) => ({ addresses: [p.ipv4], conditions: { ready: true }, nodeName: p.node, targetRef: { kind: 'Pod', name: p.name, namespace: p.namespace, uid: p.uid } })),
    ports: [{ name: 'peer', protocol: 'TCP', port: headless.port }],
  });
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: agent.namespace, uid: uid(`ns-${agent.namespace}`) } });
  api.apply({ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: agent.workload, namespace: agent.namespace, uid: uid(`ds-${agent.workload}`) }, spec: { selector: { matchLabels: { app: agent.workload } } } });
  api.apply({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: agent.name,
      namespace: agent.namespace,
      uid: agent.uid,
      labels: { app: agent.workload },
      creationTimestamp: new Date(Date.now() - 3_600_000).toISOString(),
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: agent.workload, uid: uid(`ds-${agent.workload}`), controller: true }],
    },
    spec: { nodeName: agent.node, hostNetwork: true, containers: [{ name: agent.containerName, image: 'kappa/test', ports: [{ name: 'metrics', containerPort: agent.port, hostPort: agent.port, protocol: 'TCP' }] }] },
    status: {
      phase: 'Running',
      hostIP: agent.ip,
      podIP: agent.ip,
      podIPs: [{ ip: agent.ip }],
      startTime: new Date(Date.now() - 3_600_000).toISOString(),
      containerStatuses: [{ name: agent.containerName, ready: true, containerID: `containerd://${agent.containerId}`, image: 'kappa/test', imageID: '', restartCount: 0, started: true }],
    },
  });
}
