// Public API of @kappa/ebpf-ffi: the only code that touches libbpf (koffi → libbpf.so.1).
export { IteratorAttachment, LinkAttachment, attachCgroup, attachIterator, attachPinned, attachProgram, attachTc, attachTracepoint, detachPinned, detachStaleTc, TC_HANDLE } from './attach.js';
export type { Attachment, TcDirection } from './attach.js';
export {
  BpfError,
  BpfFilesystemError,
  BpfLoadError,
  BpfPermissionError,
  BtfMissingError,
  PERMISSION_HINT,
  errnoName,
} from './errors.js';
export { cgroup2Root, cgroupIdentity, ensureBpffs, ensureTracefs, lockHolders, mountProblems, tryLockDirectory } from './filesystems.js';
export type { DirectoryLock } from './filesystems.js';
export { listInterfaces } from './interfaces.js';
export type { NetworkInterface } from './interfaces.js';
export { captureLibbpfLog, libbpfLogSince, markLibbpfLog } from './log.js';
export { MapDrainer, lookupElement, pinnedMapInfo, readPerCpuCounter, updateElement, waitForRunningPrograms } from './maps.js';
export type { DrainedChunk, PinnedMapInfo } from './maps.js';
export { BpfObject, KERNEL_BTF } from './object.js';
export { BtfKind, Helper, KernelBtf, KernelProbe, MapType, ProgType } from './probe.js';
export { RingBufferReader } from './ringbuf.js';
export { holdReceiveTimestamps, realtimeMinusMonotonicNs } from './timestamps.js';
export type { BpfMap, BpfProgram, OpenOptions } from './object.js';
