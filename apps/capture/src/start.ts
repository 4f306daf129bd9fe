// Starting capture on whatever kernel this is: ask the kernel what it offers (kernel.ts picks the
// object and a hook per feature), load and attach; when the kernel still refuses one optional
// hook's programs (a probe cannot foresee everything: fentry refused by policy, an attach that
// fails), that hook is marked refused and the next one is tried, so the other features never
// depend on it.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { constants, release } from 'node:os';
import { join } from 'node:path';
import { BpfError, BpfObject, BtfMissingError, KERNEL_BTF, KernelBtf, KernelProbe, errnoName } from '@kappa/ebpf-ffi';
import { Datapath } from './datapath.js';
import type { DatapathOptions } from './datapath.js';
import { DNS, describeFeature, failedPrograms, featureOn, hookOfFailure, planKernel } from './kernel.js';
import { configureLoad } from './load-config.js';
import type { KernelFacts, KernelPlan } from './kernel.js';

/** The two builds of bpf/kappa.bpf.c. */
export interface BpfObjects {
  /** Kernels with bpf_cast_to_kern_ctx (6.2+). */
  current: string;
  /** Kernels before 6.2. */
  compat: string;
}

/** This kernel's answers: libbpf probes and the kernel's BTF (or --btf's). Close when done. */
export function openKernelFacts(btfPath: string | undefined): KernelFacts & { btf: KernelBtf; close(): void } {
  const path = btfPath ?? KERNEL_BTF;
  const btf = KernelBtf.open(path);
  if (!btf) {
    throw new BtfMissingError(
      btfPath === undefined
        ? `kernel has no BTF at ${KERNEL_BTF}; pass --btf PATH to a BTF file for this kernel (BTFHub)`
        : `BTF file ${btfPath} ${existsSync(btfPath) ? 'is not BTF' : 'does not exist'}; pass --btf PATH to the BTF of this kernel`,
      2,
    );
  }
  const probe = new KernelProbe();
  return {
    release: release(),
    programType: (type) => probe.programType(type),
    mapType: (type) => probe.mapType(type),
    helper: (progType, helper) => probe.helper(progType, helper),
    atomics: () => probe.atomics(),
    probesRefused: () => probe.refused(),
    btf,
    close: () => btf.close(),
  };
}

/** Why the kernel refused a hook, in a few words: the errno and the verifier's or libbpf's last line. */
function refusal(error: BpfError): string {
  const last = [...error.libbpfLog].reverse().find((line) => line.trim() !== '' && !/failed to load object|unpinned map/.test(line));
  return `the kernel refused it (${errnoName(error.errno)}${last ? `: ${last.trim().replace(/^libbpf: /, '')}` : ''})`;
}

export interface KernelStart {
  datapath: Datapath;
  plan: KernelPlan;
}

export interface StartOptions {
  objects: BpfObjects;
  kernel: KernelFacts;
  /** Hooks the operator turned off (--disable-hooks). */
  disabledHooks?: readonly string[];
  /** Each hook the kernel refused, as it happens (the start log). */
  onRefused?: (hook: string, reason: string) => void;
}

/**
 * Plans, then starts the datapath with the chosen object and programs; a refused optional hook is
 * replaced by the next one. Throws KernelTooOldError when a requirement is missing, and whatever
 * Datapath.start throws for anything else.
 */
export function startOnThisKernel(datapath: Omit<DatapathOptions, 'objectPath' | 'omitPrograms'>, options: StartOptions): KernelStart {
  const { plan, started } = withRefusals({ ...options, btfPath: datapath.btfPath }, datapath.interfaces !== undefined, (p) =>
    Datapath.start({ ...datapath, objectPath: objectOf(p, options.objects), omitPrograms: p.omit, dns: featureOn(p, DNS) }),
  );
  return { datapath: started, plan };
}

/** The same choice without attaching anything (`kappa-capture --check`): the object is loaded and freed. */
export function checkThisKernel(options: StartOptions & { btfPath?: string | undefined; interfaceMode: boolean; socketMode: boolean }): KernelPlan {
  // The maps are pinned by name: in a folder of this check's own (libbpf's default would be
  // /sys/fs/bpf itself), removed with everything in it.
  const pinRoot = join(CHECK_PIN_PARENT, `check-${process.pid}-${Date.now()}`);
  mkdirSync(pinRoot, { recursive: true, mode: 0o700 });
  try {
    return withRefusals(options, options.interfaceMode, (plan) => {
      const object = BpfObject.open(objectOf(plan, options.objects), { pinRoot, ...(options.btfPath === undefined ? {} : { btfPath: options.btfPath }) });
      try {
        // The programs and configuration a start loads: with DNS on the skb programs carry the
        // copy, which the verifier drops with it off, so a kernel that refuses only the copy (6.1
        // did, E2BIG) is told here as at a start. A cgroup level keeps the target check in, as
        // --cgroup does.
        configureLoad(object, { socketMode: options.socketMode, interfaceMode: options.interfaceMode, omitPrograms: plan.omit, dns: featureOn(plan, DNS), target: { id: 0n, level: 1 } });
        object.load();
        object.unpinMaps();
      } finally {
        object.close();
      }
    }).plan;
  } finally {
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

const CHECK_PIN_PARENT = '/sys/fs/bpf/kappa';
const { EAGAIN } = constants.errno;

function objectOf(plan: KernelPlan, objects: BpfObjects): string {
  return plan.compat ? objects.compat : objects.current;
}

/**
 * The programs' CO-RE relocations found no match in the BTF they were resolved against: that BTF
 * (--btf's file, or the kernel's own) lacks the kernel types the programs read. libbpf turns each
 * unresolved access into an invalid instruction and the verifier answers EINVAL, which alone
 * would read as "the kernel does not support it".
 */
export class BtfMismatchError extends BpfError {
  override name = 'BtfMismatchError';
}

/** The load failure as the BTF's fault when libbpf could not resolve a CO-RE relocation, else `error` itself. */
export function explainBtfMismatch(error: unknown, btfPath: string | undefined): unknown {
  if (!(error instanceof BpfError) || error instanceof BtfMissingError) return error;
  const log = error.libbpfLog;
  // The verifier log as libbpf rewrites it: "failed to resolve CO-RE relocation <byte_off> [95] struct __sk_buff.sk (0:30:0 @ offset 168)".
  const unresolved = log.map((line) => /failed to resolve CO-RE relocation <[\w_]+> \[\d+\] ([^(]+?)\s*(?:\(|$)/.exec(line)?.[1]).find((type) => type !== undefined);
  // "no matching targets found" alone is no fault: a relocation that may miss (bpf_core_field_exists,
  // a field guarded by it) says so on every kernel without that field. Only a poisoned
  // instruction that the verifier reached (libbpf's call to unknown#195896080, 0xbad2310, when its
  // log was not rewritten into the line above) makes the BTF the cause: otherwise the real
  // verifier error (6.1 refusing a program) was hidden behind "no match for 2 fields".
  const poisoned = log.some((line) => /unknown#195896080\b/.test(line));
  if (unresolved === undefined && !poisoned) return error;
  const noTarget = log.filter((line) => /relo #\d+: no matching targets found/.test(line)).length;
  const program = [...failedPrograms(error)][0];
  const what = unresolved ? `${unresolved}${program ? `, read by ${program}` : ''}` : `${noTarget} field${noTarget === 1 ? '' : 's'}`;
  const message =
    btfPath === undefined
      ? `the kernel's BTF (${KERNEL_BTF}) lacks kernel types the programs need (no match for ${what}); pass --btf PATH to a complete BTF of this kernel (BTFHub)`
      : `BTF file ${btfPath} lacks kernel types the programs need (no match for ${what}): it is not this kernel's BTF or is incomplete; pass --btf PATH to the BTF of this kernel (release ${release()}, e.g. from BTFHub), or leave --btf out where ${KERNEL_BTF} exists`;
  return new BtfMismatchError(message, error.errno, log, { cause: error });
}

/**
 * The verifier gave up on a program because a signal was pending (EAGAIN: a profiler's SIGPROF
 * or SIGALRM, arriving more often than a verification takes) at every try: not a refusal.
 */
export class LoadInterruptedError extends BpfError {
  override name = 'LoadInterruptedError';
}

/** Loads tried again after EAGAIN (libbpf itself tries each program 5 times) before giving up. */
export const INTERRUPTED_LOAD_RETRIES = 3;

/**
 * Plans and runs `start` (a load, or a load and attach), planning again without a hook the kernel
 * refused. Exported for its tests; startOnThisKernel and checkThisKernel are its callers.
 */
export function withRefusals<T>(options: StartOptions & { btfPath?: string | undefined }, interfaceMode: boolean, start: (plan: KernelPlan) => T): { plan: KernelPlan; started: T } {
  const refused = new Map<string, string>((options.disabledHooks ?? []).map((hook) => [hook, `${hook}: turned off by --disable-hooks`]));
  let interrupted = 0;
  for (;;) {
    const plan = planKernel(options.kernel, { interfaceMode, refused });
    try {
      return { plan, started: start(plan) };
    } catch (error) {
      // The verifier stops at a pending signal and answers EAGAIN: the same load again, bounded.
      if (error instanceof BpfError && error.errno === EAGAIN) {
        if (++interrupted <= INTERRUPTED_LOAD_RETRIES) continue;
        throw new LoadInterruptedError(
          `${error.message}: the kernel's verifier was interrupted by signals at ${interrupted} loads in a row (EAGAIN); stop whatever signals this process often (a CPU profiler's SIGPROF) and start again`,
          EAGAIN,
          error.libbpfLog,
          { cause: error },
        );
      }
      const hook = error instanceof BpfError ? hookOfFailure(plan, error) : undefined;
      // Not an optional hook's program (or one already refused, which cannot repeat): not ours to
      // mend; a BTF without the types the programs read is named as the cause.
      if (!hook || refused.has(hook.name) || !(error instanceof BpfError)) throw explainBtfMismatch(error, options.btfPath);
      // A BTF without the types capture's own programs read is not the fault of what lives inside them.
      if (hook.inside && explainBtfMismatch(error, options.btfPath) !== error) throw explainBtfMismatch(error, options.btfPath);
      const reason = `${hook.name}: ${refusal(error)}`;
      refused.set(hook.name, reason);
      options.onRefused?.(hook.name, reason);
    }
  }
}

/** The plan for the heartbeat (StageStatus.features): feature → how. */
export function planFeatures(plan: KernelPlan): Record<string, string> {
  const features: Record<string, string> = {
    'kernel structures': plan.compat ? 'bpf_probe_read_kernel (kappa-compat.bpf.o: no bpf_cast_to_kern_ctx before 6.2)' : 'bpf_cast_to_kern_ctx (kappa.bpf.o)',
  };
  for (const choice of plan.features) features[choice.feature] = describeFeature(choice).slice(choice.feature.length + 2);
  return features;
}
