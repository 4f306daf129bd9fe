// The flow store: every exported record kept on disk for a retention period and queried over
// flow time with DuckDB (chosen over SQLite by measurement, BENCHMARKS.md "Flow store").
//
// Layout of the store folder, one segment at a time being written:
//   seg-<n>.rec      the records' protobuf bytes, back to back (what raw flow queries return)
//   seg-<n>.recz     a sealed segment's record bytes, zstd-compressed in 64 KiB blocks (rec-file.ts)
//   seg-<n>.csv      the hot segment's index: one line per record (columns.ts), appended per batch
//   seg-<n>.parquet  a sealed segment's index, in arrival order, zstd-compressed Parquet v2
// The hot segment is sealed (its CSV turned into Parquet by DuckDB) when it reaches
// --store-segment-records records or --store-segment-age; queries read the sealed segments that
// overlap their range plus the hot CSV. Retention drops whole segments: those entirely older
// than --store-retention, then the oldest while the folder is above --store-max-bytes.
// A restart seals whatever CSV it finds, so nothing written before a crash is lost (a last line
// the crash cut short is removed first: its batch was not acked and comes again).
// A seal survives a crash or a power loss at any step: its outputs are written under temporary
// names, synced, renamed, the folder synced, and only then are the CSV and .rec removed; open
// settles whatever step a stop interrupted (recover()), reading each row from one file only.
// The CSV writer writes only lines DuckDB reads back as the record's text (columns.ts csvText);
// a seal still compares the lines written with the rows DuckDB made, and counts and logs any
// line it could not read (kappa_exporter_store_rows_unreadable_total), never silently.
// Sealing runs beside the appends (DuckDB works in its own threads): a full hot segment is
// closed, a new one opened, and the append returns; at most --store-pending-seals segments wait
// for their seal before an append waits (backpressure). A sealing segment is read from its CSV
// until its Parquet file is complete; files are removed only when no query is reading.
// A batch JetStream redelivers after a crash is not stored twice: the store remembers the ids of
// the newest --store-dedupe-window records it holds at open, and skips those ids in redelivered
// batches (within one run the exporter's dispatcher already skips batches a sink took).
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { open, rename, truncate } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';
import { FlowBatchView, FlowFields, FlowRecordSchema, MessageCursor, fromBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { compileSql, filterColumns, sqlString } from '@kappa/filter';
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { StoreWriteError } from '../errors.js';
import { cutBack, syncFile, syncFolder, writeFully } from '../files.js';
import { csvColumnsSql, CsvIndexWriter } from './columns.js';
import { compressRecords, reczLength, RecordBytes } from './rec-file.js';

export interface FlowStoreOptions {
  dir: string;
  /** Records older than this (flow time) are dropped. */
  retentionMs: number;
  /** The folder is kept under this many bytes by dropping the oldest segments. */
  maxBytes: number;
  segmentRecords: number;
  segmentAgeMs: number;
  /** DuckDB's memory limit, e.g. "256MB". */
  memoryLimit?: string;
  /**
   * DuckDB's threads (default 1). Two made a seal cost ~20 % more CPU per record where the cores
   * are busy (the pipeline; a Kubernetes limit of one CPU), and a seal then took both cores from
   * the live path; queries over rollups take milliseconds either way.
   */
  threads?: number;
  /**
   * Full segments that may wait for or be in their seal while appends go on (default 2); one
   * more and the append that filled it waits. 0: the append that fills a segment seals it
   * before it returns (how the store worked before; benchmarks compare against it).
   */
  pendingSeals?: number;
  /** Ids of the newest records remembered at open, skipped in redelivered batches (default 200 000). */
  dedupeWindow?: number;
  /** A background seal failed: the segment stays readable from its CSV and is sealed at the next open. */
  onSealError?: (error: unknown, segment: number) => void;
  /** Warns of index lines a seal could not read. */
  logger?: Logger;
  /** Where kappa_exporter_store_rows_unreadable_total is registered. */
  registry?: Registry;
  /**
   * Test hook, never set in production: called after each step of a seal (crash tests make the
   * process SIGKILL itself here, then check what open() makes of the folder).
   */
  sealStepHookForTests?: (step: SealStep, segment: number) => void;
}

/**
 * A seal's steps, in order. A stop after any of them leaves the segment's rows in exactly one
 * readable place once open() has run: the CSV and .rec stay until the outputs are durable.
 */
export const sealSteps = [
  /** The CSV copied to `.parquet.tmp`, its rows counted against the lines written. */
  'index-written',
  'rollup-written',
  /** The .rec compressed to `.recz.tmp` and synced (or an intact .recz a stop left kept). */
  'records-written',
  /** `.parquet.tmp` and `.rollup.parquet.tmp` synced (fdatasync). */
  'outputs-synced',
  'records-renamed',
  'rollup-renamed',
  'index-renamed',
  /** The folder synced: the renames are durable. */
  'folder-synced',
  'csv-removed',
  'rec-removed',
] as const;
export type SealStep = (typeof sealSteps)[number];

interface Segment {
  seq: number;
  /** Flow-time range of its records (ns); min > max while empty. */
  minNs: bigint;
  maxNs: bigint;
  records: number;
  /** Bytes of its longest CSV index line (DuckDB's max_line_size must cover it). */
  longestLine: number;
  /** Sealed: the Parquet index exists and the CSV is gone. */
  sealed: boolean;
}

export interface StoredFlow {
  record: FlowRecord;
  receivedNs: bigint;
}

export interface FlowQuery {
  sinceNs: bigint;
  /** 0n: no end. */
  untilNs: bigint;
  /** Filter language text. */
  filter: string;
  /** The last N matching flows (returned oldest first); 0 = all. */
  last: number;
  /** At most this many (from the oldest, or of the last N); 0 = no limit. */
  limit: number;
}

export type AggregateLevel = 'namespace' | 'workload' | 'pod' | 'process' | 'node' | 'ip';
export type AggregateSide = 'pair' | 'src' | 'dst';
export type AggregateMetric = 'bytes' | 'packets' | 'retransmits' | 'rtt' | 'dropped';
export const aggregateLevels: readonly AggregateLevel[] = ['namespace', 'workload', 'pod', 'process', 'node', 'ip'];
export const aggregateSides: readonly AggregateSide[] = ['pair', 'src', 'dst'];
export const aggregateMetrics: readonly AggregateMetric[] = ['bytes', 'packets', 'retransmits', 'rtt', 'dropped'];

export interface AggregateQuery {
  sinceNs: bigint;
  untilNs: bigint;
  filter: string;
  level: AggregateLevel;
  side: AggregateSide;
  orderBy: AggregateMetric;
  limit: number;
}

export interface AggregateGroup {
  namespace: string;
  name: string;
  external: boolean;
}

export interface AggregateRow {
  src: AggregateGroup;
  dst: AggregateGroup;
  bytes: bigint;
  reverseBytes: bigint;
  packets: bigint;
  reversePackets: bigint;
  retransmits: bigint;
  rttAvgUs: number;
  rttMaxUs: number;
  records: bigint;
  /** Dropped packets and bytes of every record of the group (both vantages: each drop is on one). */
  droppedPackets: bigint;
  droppedBytes: bigint;
  /** What rttAvgUs is the mean of: the sum of the smoothed RTTs and the records that carry one. */
  rttSumUs: bigint;
  rttRecords: bigint;
}

export interface StoreStats {
  records: number;
  bytes: number;
  oldestNs: bigint;
  newestNs: bigint;
  segments: number;
  expiredRecords: number;
  /** Records of redelivered batches not stored again (their ids were already stored). */
  duplicateRecords: number;
  /** Full segments waiting for or in their seal. */
  pendingSeals: number;
}

/**
 * Each conversation counts once in aggregates: the initiator's record, plus responder-side
 * records that were not joined (their initiator was not observed, e.g. outside the cluster).
 */
export const countedOnceSql = '(vantage = 1 OR NOT joined)';

/**
 * Drops are not seen twice: each dropped packet is on the record of the vantage that dropped it
 * (a TCP segment refused at the responder is on the responder's record). So the rows an
 * aggregate reads are the counted-once rows plus any other row with drops, and only the drops are
 * summed over both.
 */
const aggregatedRowsSql = `(${countedOnceSql} OR dropped_packets > 0)`;

/** SQL of a group key at a level, for one side (s = src | dst): [namespace, name, external]. */
function groupSql(level: AggregateLevel, s: 'src' | 'dst'): [string, string, string] {
  const inCluster = `${s}_namespace <> ''`;
  const external = level === 'ip' || level === 'node' ? 'false' : `NOT (${inCluster})`;
  const ns = level === 'ip' || level === 'node' ? "''" : `CASE WHEN ${inCluster} THEN ${s}_namespace ELSE '' END`;
  const objectName = `coalesce(nullif(${s}_pod, ''), nullif(${s}_object, ''), ${s}_ip)`;
  let name: string;
  switch (level) {
    case 'namespace':
      name = "''";
      break;
    case 'workload':
      name = `CASE WHEN ${inCluster} THEN coalesce(nullif(${s}_workload, ''), ${objectName}) ELSE '' END`;
      break;
    case 'pod':
      name = `CASE WHEN ${inCluster} THEN ${objectName} ELSE '' END`;
      break;
    case 'process':
      name = `CASE WHEN ${inCluster} THEN ${objectName} || '/' || ${s}_process ELSE '' END`;
      break;
    case 'node':
      name = `${s}_node`;
      break;
    case 'ip':
      name = `${s}_ip`;
      break;
  }
  return [ns, name, external];
}

const metricOrder: Record<AggregateMetric, string> = {
  bytes: 'bytes + reverse_bytes',
  packets: 'packets + reverse_packets',
  retransmits: 'retransmits',
  rtt: 'rtt_avg_us',
  dropped: 'dropped_packets',
};

/**
 * The sums every aggregate carries over aggregatedRowsSql's rows; RTT as a sum and a count so
 * partial sums add up exactly. Everything but the drops counts each conversation once.
 */
const once = `FILTER (WHERE ${countedOnceSql})`;
const sumsSql = `coalesce(sum(bytes) ${once}, 0)::UBIGINT AS bytes, coalesce(sum(reverse_bytes) ${once}, 0)::UBIGINT AS reverse_bytes,
  coalesce(sum(packets) ${once}, 0)::UBIGINT AS packets, coalesce(sum(reverse_packets) ${once}, 0)::UBIGINT AS reverse_packets,
  coalesce(sum(retransmits) ${once}, 0)::UBIGINT AS retransmits,
  sum(srtt_us) FILTER (WHERE srtt_us > 0 AND ${countedOnceSql})::UBIGINT AS rtt_sum, count(*) FILTER (WHERE srtt_us > 0 AND ${countedOnceSql})::UBIGINT AS rtt_n,
  coalesce(max(srtt_us) ${once}, 0)::UINTEGER AS rtt_max, count(*) ${once}::UBIGINT AS records,
  sum(dropped_packets)::UBIGINT AS dropped_packets, sum(dropped_bytes)::UBIGINT AS dropped_bytes`;

/**
 * The raw columns a segment's rollup keeps beside the workload-pair keys: a map filtered on
 * these alone (namespaces, workloads, the destination port, the protocol: what map filters use
 * most) is answered from the rollups like an unfiltered one. Rollups without the last of them
 * were written by an older build and are removed at open.
 */
const rollupFilterColumns: readonly string[] = ['src_namespace', 'src_workload', 'dst_namespace', 'dst_workload', 'dst_port', 'protocol'];
const rollupColumnSet: ReadonlySet<string> = new Set(rollupFilterColumns);

type Ext = 'rec' | 'recz' | 'csv' | 'parquet' | 'rollup.parquet';
/**
 * A segment's files in the order a drop removes them: the index before the record bytes, so a
 * stop part way leaves either a whole segment or files open() knows belong to none.
 */
const allExts: readonly Ext[] = ['csv', 'parquet', 'rollup.parquet', 'recz', 'rec'];

const NEWLINE = 0x0a;
const QUOTE = 0x22;

const segmentName = (seq: number) => `seg-${String(seq).padStart(8, '0')}`;

export class FlowStore {
  private instance: DuckDBInstance | undefined;
  private readonly segments: Segment[] = [];
  private hot: Segment | undefined;
  private recFile: FileHandle | undefined;
  private csvFile: FileHandle | undefined;
  private recBytes = 0;
  private csvBytes = 0;
  private hotOpenedMs = 0;
  /** Appends run one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  /** Seals run one at a time, in order, beside the appends. */
  private sealing: Promise<void> = Promise.resolve();
  private pendingSeals = 0;
  /** Queries running, and files to remove once none is (a query may be reading them). */
  private reading = 0;
  private readonly unlinkLater: string[] = [];
  /** Ids of the newest records stored before this run (redelivery dedupe). */
  private readonly seen = new Set<string>();
  private readonly cursor = FlowBatchView.recordCursor();
  private duplicates = 0;
  private expired = 0;
  private closed = false;
  /** The batch being appended: its index lines and its records' bytes (reused batch after batch). */
  private readonly index = new CsvIndexWriter();
  private recBuffer = Buffer.allocUnsafe(1024 * 1024);
  private readonly unreadable: Counter<'cause'> | undefined;
  private readonly damaged: Counter<'cause'> | undefined;

  constructor(private readonly options: FlowStoreOptions) {
    this.unreadable = causeCounter(
      options.registry,
      'kappa_exporter_store_rows_unreadable_total',
      'Index lines of the flow store DuckDB could not read when sealing a segment: cause="unparsable" (their records are missing from queries: a bug, see the log), cause="cut_last_line" (the last line a stop cut short: its batch was not acked and is redelivered)',
    );
    this.damaged = causeCounter(
      options.registry,
      'kappa_exporter_store_segments_damaged_total',
      'Sealed segments of the flow store found damaged at open with no source left to seal them again (a power loss under a build that did not sync its seals, or a failing disk; see the log): cause="index_unreadable" (its records are missing from queries; its files were moved to damaged/), cause="record_bytes_short" (raw flows of some of its rows cannot be read; aggregates still count them)',
    );
  }

  private sealStep(step: SealStep, segment: Segment): void {
    this.options.sealStepHookForTests?.(step, segment.seq);
  }

  private path(seq: number, ext: Ext): string {
    return join(this.options.dir, `${segmentName(seq)}.${ext}`);
  }

  private async connect(): Promise<DuckDBConnection> {
    if (!this.instance) throw new Error('the flow store is not open');
    return this.instance.connect();
  }

  /** Opens the folder: seals CSVs left by a crash, learns the sealed segments, opens a new hot one. */
  async open(): Promise<void> {
    mkdirSync(this.options.dir, { recursive: true });
    this.instance = await DuckDBInstance.create(':memory:', {
      memory_limit: this.options.memoryLimit ?? '256MB',
      threads: String(this.options.threads ?? 1),
      // No extension is ever downloaded (no network in production either).
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
      // Spills of large sorts go to the store's folder (the container's root is read-only).
      temp_directory: join(this.options.dir, 'tmp'),
    });
    const seqs = new Set<number>();
    for (const file of readdirSync(this.options.dir)) {
      const m = /^seg-(\d+)\.(recz?|csv|parquet|rollup\.parquet)(\.tmp)?$/.exec(file);
      if (!m) continue;
      if (m[3]) rmSync(join(this.options.dir, file), { force: true });
      else seqs.add(Number(m[1]));
    }
    const connection = await this.connect();
    try {
      for (const seq of [...seqs].sort((a, b) => a - b)) {
        const segment: Segment = { seq, minNs: 1n, maxNs: 0n, records: 0, longestLine: 0, sealed: false };
        if (await this.recover(connection, segment)) this.segments.push(segment);
      }
      await this.dropStaleRollups(connection);
      await this.rememberNewestIds(connection);
    } finally {
      connection.closeSync();
    }
    await this.startHot((this.segments.at(-1)?.seq ?? 0) + 1);
    this.enforceRetention();
  }

  /**
   * Brings a segment found at open to one readable state, whatever step of a seal (or of a drop)
   * a crash or a power loss interrupted; false when nothing of it is left to read.
   * - CSV and a Parquet file holding at least its lines (a stop after the seal's renames, before
   *   the CSV was removed; more rows than lines: a power loss cut the CSV, never synced): the
   *   Parquet file is kept, made durable, and the sources removed.
   * - CSV with no Parquet file, or one unreadable or short (a stop before the rename, or an older
   *   build's unsynced file cut by a power loss): sealed again from the CSV.
   * - Parquet file and .rec without the CSV (a stop between the removals): the records settled.
   * - Neither CSV nor Parquet file: what a drop or an empty segment left; removed.
   * Each row is then read from one file only (queries read a segment's Parquet file or its CSV).
   */
  private async recover(connection: DuckDBConnection, segment: Segment): Promise<boolean> {
    const path = (ext: Ext) => this.path(segment.seq, ext);
    if (existsSync(path('csv'))) {
      await this.learnIndexLines(segment);
      const rows = existsSync(path('parquet')) ? await parquetRows(connection, path('parquet')) : undefined;
      // The seal renames the rollup before the index: beside a whole index, a rollup DuckDB
      // cannot read was cut by a power loss too.
      const rollupRows = rows === undefined ? undefined : await parquetRows(connection, path('rollup.parquet'));
      if (rows !== undefined && rows >= segment.records && rollupRows !== undefined) await this.finishSealed(connection, segment);
      else {
        if (existsSync(path('parquet'))) {
          const what = rows === undefined ? '.parquet is unreadable' : rows < segment.records ? `.parquet is short (${rows} rows for ${segment.records} index lines)` : '.rollup.parquet is unreadable';
          this.options.logger?.warn(
            { segment: segmentName(segment.seq), parquetRows: rows ?? null, csvLines: segment.records },
            `flow store: ${segmentName(segment.seq)}${what} beside its CSV (a stop or power loss during its seal); sealed again from the CSV, nothing lost`,
          );
        }
        await this.sealWith(connection, segment);
      }
    } else if (!existsSync(path('parquet'))) {
      for (const ext of allExts) rmSync(path(ext), { force: true });
      return false;
    } else if (existsSync(path('rec')) && (await parquetRows(connection, path('parquet'))) !== undefined) await this.finishSealed(connection, segment);
    let stats: [bigint | null, bigint | null, bigint, bigint | null];
    try {
      const sql = `SELECT min(time_ns), max(time_ns), count(*), max(off + len) FROM read_parquet(${sqlString(path('parquet'))})`;
      stats = (await connection.runAndReadAll(sql)).getRows()[0] as typeof stats;
    } catch (error) {
      this.setAside(segment, error);
      return false;
    }
    const [min, max, count, end] = stats;
    if (count === 0n) {
      for (const ext of allExts) rmSync(path(ext), { force: true });
      return false;
    }
    const length = existsSync(path('recz')) ? await reczLength(path('recz'), false) : undefined;
    if (length === undefined || length < Number(end ?? 0n)) {
      this.damaged?.inc({ cause: 'record_bytes_short' });
      this.options.logger?.error(
        { segment: segmentName(segment.seq), recordBytes: length ?? null, indexNeeds: Number(end ?? 0n) },
        `flow store: ${segmentName(segment.seq)}.recz is missing or cut short and its .rec is gone (a power loss under an older build, or a failing disk): raw flows of some of its ${count} rows cannot be read (aggregates still count them); check the disk, and remove the segment's files once it is no longer needed`,
      );
    }
    Object.assign(segment, { minNs: min ?? 1n, maxNs: max ?? 0n, records: Number(count), sealed: true });
    return true;
  }

  /**
   * A segment whose Parquet file is whole (a stop came after the seal's renames): its record
   * bytes settled, the outputs synced (an older build renamed them unsynced), then the sources
   * removed.
   */
  private async finishSealed(connection: DuckDBConnection, segment: Segment): Promise<void> {
    const parquet = this.path(segment.seq, 'parquet');
    const rollup = this.path(segment.seq, 'rollup.parquet');
    if (existsSync(rollup) && (await parquetRows(connection, rollup)) === undefined) rmSync(rollup, { force: true });
    const recz = this.path(segment.seq, 'recz');
    const written = await this.writeRecords(connection, segment, parquet);
    await syncFile(parquet);
    if (existsSync(rollup)) await syncFile(rollup);
    if (written) renameSync(`${recz}.tmp`, recz);
    else if (existsSync(recz)) await syncFile(recz);
    await syncFolder(this.options.dir);
    rmSync(this.path(segment.seq, 'csv'), { force: true });
    rmSync(this.path(segment.seq, 'rec'), { force: true });
  }

  /**
   * The segment's record bytes for its seal: an intact .recz a stop left beside the .rec (every
   * block decompresses and it holds every record the index points to) is kept, since after a
   * power loss the .rec, never synced, may be the shorter; otherwise the .rec is compressed into
   * `.recz.tmp`, synced. True when `.recz.tmp` was written.
   */
  private async writeRecords(connection: DuckDBConnection, segment: Segment, index: string): Promise<boolean> {
    const recz = this.path(segment.seq, 'recz');
    if (existsSync(recz)) {
      const end = Number((await connection.runAndReadAll(`SELECT coalesce(max(off + len), 0) FROM read_parquet(${sqlString(index)})`)).getRows()[0]![0]);
      const length = await reczLength(recz, true);
      if (length !== undefined && length >= end) return false;
    }
    // No .rec either: recover() counts and logs the segment's missing record bytes.
    if (!existsSync(this.path(segment.seq, 'rec'))) return false;
    await compressRecords(this.path(segment.seq, 'rec'), `${recz}.tmp`);
    return true;
  }

  /**
   * A sealed index DuckDB cannot read, with no CSV left to seal it again: its files are moved to
   * damaged/ (not deleted: a disk tool may still recover them), counted and logged.
   */
  private setAside(segment: Segment, error: unknown): void {
    const damaged = join(this.options.dir, 'damaged');
    mkdirSync(damaged, { recursive: true });
    for (const ext of allExts) {
      const from = this.path(segment.seq, ext);
      if (existsSync(from)) renameSync(from, join(damaged, `${segmentName(segment.seq)}.${ext}`));
    }
    this.damaged?.inc({ cause: 'index_unreadable' });
    this.options.logger?.error(
      { segment: segmentName(segment.seq), error: error instanceof Error ? error.message : String(error) },
      `flow store: ${segmentName(segment.seq)}.parquet cannot be read and its CSV is gone (a power loss under a build that did not sync its seals, or a failing disk): its records are missing from queries; its files are in ${damaged}: check the disk, then remove them (they do not count towards --store-max-bytes)`,
    );
  }

  /**
   * Rollups written by older builds (without the drop sums or the filter columns) are removed,
   * so queries read those segments' rows instead (exact, slower) rather than fail on a column;
   * so is a rollup DuckDB cannot read (an older build's, cut by a power loss).
   */
  private async dropStaleRollups(connection: DuckDBConnection): Promise<void> {
    const rollups = this.segments.map((s) => this.path(s.seq, 'rollup.parquet')).filter((p) => existsSync(p));
    if (rollups.length === 0) return;
    const withColumn = (paths: string[]) => `SELECT file_name FROM parquet_schema([${paths.map(sqlString).join(', ')}]) WHERE name = ${sqlString(rollupFilterColumns.at(-1)!)}`;
    const current = new Set<string>();
    try {
      for (const r of (await connection.runAndReadAll(withColumn(rollups))).getRows()) current.add(String(r[0]));
    } catch {
      // One of them is unreadable: each on its own.
      for (const path of rollups) {
        try {
          for (const r of (await connection.runAndReadAll(withColumn([path]))).getRows()) current.add(String(r[0]));
        } catch {
          // unreadable: removed below
        }
      }
    }
    for (const path of rollups) if (!current.has(path)) rmSync(path, { force: true });
  }

  /**
   * The ids of the newest `dedupeWindow` records (by write order: the newest segments, the highest
   * offsets), read from their stored bytes: what a batch redelivered after a crash may repeat.
   */
  private async rememberNewestIds(connection: DuckDBConnection): Promise<void> {
    let remaining = this.options.dedupeWindow ?? 200_000;
    const cursor = new MessageCursor(FlowRecordSchema);
    for (const segment of [...this.segments].reverse()) {
      if (remaining <= 0) break;
      const rows = (await connection.runAndReadAll(`SELECT off, len FROM read_parquet(${sqlString(this.path(segment.seq, 'parquet'))}) ORDER BY off DESC LIMIT ${remaining}`)).getRows() as [bigint, number][];
      if (rows.length === 0) continue;
      remaining -= rows.length;
      const from = Number(rows.at(-1)![0]);
      const to = Number(rows[0]![0]) + rows[0]![1];
      let bytes: Buffer;
      try {
        const file = await RecordBytes.open(this.path(segment.seq, 'rec'), this.path(segment.seq, 'recz'));
        try {
          bytes = await file.read(from, to - from);
        } finally {
          await file.close();
        }
      } catch {
        // Record bytes recover() found missing (counted and logged there): their ids are not known.
        continue;
      }
      for (const [off, len] of rows) {
        const id = cursor.reset(bytes, Number(off) - from, Number(off) - from + len).string(FlowFields.FlowRecord.id);
        if (id !== '') this.seen.add(id);
      }
    }
  }

  private async startHot(seq: number): Promise<void> {
    this.hot = { seq, minNs: 1n, maxNs: 0n, records: 0, longestLine: 0, sealed: false };
    this.recFile = await open(this.path(seq, 'rec'), 'a');
    this.csvFile = await open(this.path(seq, 'csv'), 'a');
    this.recBytes = 0;
    this.csvBytes = 0;
    this.hotOpenedMs = Date.now();
    this.segments.push(this.hot);
  }

  /**
   * Stores a batch's records: their bytes as received and one index line each, read in place.
   * The view must stay valid until the returned promise settles (the sink awaits it).
   */
  append(view: FlowBatchView, receivedNs: bigint, redelivered = false): Promise<void> {
    const run = this.queue.then(() => this.appendNow(view, receivedNs, redelivered));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async appendNow(view: FlowBatchView, receivedNs: bigint, redelivered: boolean): Promise<void> {
    if (this.closed) throw new Error('the flow store is closed');
    const hot = this.hot!;
    const n = view.length;
    if (n === 0) return;
    const index = this.index;
    index.reset(receivedNs);
    // The records' bytes, copied back to back into one reused buffer (no per-record object).
    const source = Buffer.from(view.bytes.buffer, view.bytes.byteOffset, view.bytes.byteLength);
    // A batch JetStream redelivers after a crash may hold records stored before it.
    const dedupe = redelivered && this.seen.size > 0;
    let size = 0;
    for (let i = 0; i < n; i++) size += view.recordEnd(i) - view.recordStart(i);
    if (size > this.recBuffer.length) this.recBuffer = Buffer.allocUnsafe(Math.max(size, 2 * this.recBuffer.length));
    const rec = this.recBuffer;
    let written = 0;
    let offset = this.recBytes;
    let kept = 0;
    for (let i = 0; i < n; i++) {
      if (dedupe && this.seen.has(view.record(i, this.cursor).string(FlowFields.FlowRecord.id))) {
        this.duplicates++;
        continue;
      }
      kept++;
      const start = view.recordStart(i);
      const end = view.recordEnd(i);
      source.copy(rec, written, start, end);
      written += end - start;
      index.line(view, i, hot.seq, offset, end - start);
      offset += end - start;
    }
    if (kept === 0) return;
    const minNs = index.minNs;
    const maxNs = index.maxNs;
    if (minNs < hot.minNs || hot.minNs > hot.maxNs) hot.minNs = minNs;
    if (maxNs > hot.maxNs) hot.maxNs = maxNs;
    // Before the lines are on disk: a query reading the hot CSV meanwhile needs a long enough max_line_size.
    if (index.longestLine > hot.longestLine) hot.longestLine = index.longestLine;
    // Bytes first: an index line never points past what is on disk, even after a crash.
    try {
      await writeFully(this.recFile!, rec.subarray(0, written));
      await writeFully(this.csvFile!, index.buffer.subarray(0, index.length));
    } catch (cause) {
      // A write that failed part way (a full disk) leaves neither part of a record (later offsets
      // would be wrong) nor part of an index line (the next batch's first line would join it) in
      // the files: both go back to where the batch began. It is not acked, and comes again.
      const files = [[this.recFile!, this.recBytes], [this.csvFile!, this.csvBytes]] as const;
      throw new StoreWriteError(this.options.dir, { cause: await cutBack(cause, files, 'a seal counts an index line it breaks') });
    }
    this.recBytes = offset;
    this.csvBytes += index.length;
    hot.records += kept;
    if (hot.records >= this.options.segmentRecords || Date.now() - this.hotOpenedMs >= this.options.segmentAgeMs) await this.rotate();
  }

  /** Seals the hot segment when it is old enough even without new records (called on a timer). */
  tick(): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.closed || !this.hot) return;
      if (this.hot.records > 0 && Date.now() - this.hotOpenedMs >= this.options.segmentAgeMs) await this.rotate();
      this.enforceRetention();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Closes the full hot segment, opens the next and seals the full one in the background; waits
   * only while more than `pendingSeals` segments wait for their seal (0: waits for this seal).
   */
  private async rotate(): Promise<void> {
    const full = this.hot!;
    await this.recFile?.close();
    await this.csvFile?.close();
    await this.startHot(full.seq + 1);
    const limit = this.options.pendingSeals ?? 2;
    if (limit > 0 && this.pendingSeals >= limit) await this.sealing;
    this.pendingSeals++;
    const seal = this.sealing.then(async () => {
      const connection = await this.connect();
      try {
        await this.sealWith(connection, full);
      } finally {
        connection.closeSync();
      }
      this.enforceRetention();
    });
    this.sealing = seal
      .catch((error: unknown) => this.options.onSealError?.(error, full.seq))
      .finally(() => {
        this.pendingSeals--;
      });
    if (limit === 0) await seal;
    else this.enforceRetention();
  }

  /** Waits until every full segment is sealed (benchmarks, tests, close). */
  async flush(): Promise<void> {
    await this.queue;
    await this.sealing;
  }

  /** Runs a query while counting it as reading, so no file it may read is removed under it. */
  private async read<T>(query: () => Promise<T>): Promise<T> {
    this.reading++;
    try {
      return await query();
    } finally {
      this.reading--;
      this.reap();
    }
  }

  private removeWhenUnread(paths: string[]): void {
    this.unlinkLater.push(...paths);
    this.reap();
  }

  private reap(): void {
    if (this.reading > 0) return;
    for (const path of this.unlinkLater.splice(0)) rmSync(path, { force: true });
  }

  /**
   * CSV → Parquet in arrival order (not sorted: records arrive in about flow-time order, so each
   * row group's time_ns statistics still prune; a sort cost ~6 µs per record and materialized the
   * whole segment in DuckDB's memory), Parquet format version 2 (delta and byte-stream-split
   * encodings: a smaller file, written and read faster; BENCHMARKS.md "10 million records, seal cost").
   * Durable before destructive: every output is written under a temporary name and synced, then
   * renamed, the folder synced, and only then are the CSV and .rec removed (sealSteps).
   */
  private async sealWith(connection: DuckDBConnection, segment: Segment): Promise<void> {
    const csv = this.path(segment.seq, 'csv');
    const parquet = this.path(segment.seq, 'parquet');
    await connection.run(
      `COPY (SELECT * FROM ${csvSource(csv, segment.longestLine)}) TO ${sqlString(`${parquet}.tmp`)} (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 122880)`,
    );
    await this.countUnreadable(connection, segment, `${parquet}.tmp`);
    this.sealStep('index-written', segment);
    // The rollup: the workload-pair sums of this segment (per value of the rollup's filter
    // columns), counting each conversation once; a namespace or workload map, unfiltered or
    // filtered on those columns only, reads these for the segments wholly in its range.
    const rollup = this.path(segment.seq, 'rollup.parquet');
    const [sns, sname, sext] = groupSql('workload', 'src');
    const [dns, dname, dext] = groupSql('workload', 'dst');
    await connection.run(
      `COPY (SELECT ${sns} AS s_ns, ${sname} AS s_name, ${sext} AS s_ext, ${dns} AS d_ns, ${dname} AS d_name, ${dext} AS d_ext, ${rollupFilterColumns.join(', ')}, ${sumsSql}
        FROM read_parquet(${sqlString(`${parquet}.tmp`)}) WHERE ${aggregatedRowsSql} GROUP BY ALL) TO ${sqlString(`${rollup}.tmp`)} (FORMAT parquet, COMPRESSION zstd)`,
    );
    this.sealStep('rollup-written', segment);
    // The record bytes, compressed (~4× smaller here); readers use the .recz once it is renamed.
    const recz = this.path(segment.seq, 'recz');
    const written = await this.writeRecords(connection, segment, `${parquet}.tmp`);
    this.sealStep('records-written', segment);
    await Promise.all([syncFile(`${parquet}.tmp`), syncFile(`${rollup}.tmp`)]);
    this.sealStep('outputs-synced', segment);
    if (written) await rename(`${recz}.tmp`, recz);
    this.sealStep('records-renamed', segment);
    await rename(`${rollup}.tmp`, rollup);
    this.sealStep('rollup-renamed', segment);
    await rename(`${parquet}.tmp`, parquet);
    this.sealStep('index-renamed', segment);
    await syncFolder(this.options.dir);
    this.sealStep('folder-synced', segment);
    segment.sealed = true;
    this.removeWhenUnread([csv]);
    this.sealStep('csv-removed', segment);
    this.removeWhenUnread([this.path(segment.seq, 'rec')]);
    this.sealStep('rec-removed', segment);
  }

  /**
   * Every index line written (segment.records) should be a row of the new Parquet file: the rest
   * is counted and logged with DuckDB's reasons (the CSV read again into its reject table, only
   * then; the count itself comes from the comparison, since DuckDB was seen to lose lines near
   * its buffer's ends without a reject row).
   */
  private async countUnreadable(connection: DuckDBConnection, segment: Segment, parquet: string): Promise<void> {
    const rows = Number((await connection.runAndReadAll(`SELECT count(*) FROM read_parquet(${sqlString(parquet)})`)).getRows()[0]![0]);
    const missing = segment.records - rows;
    if (missing <= 0) return;
    this.unreadable?.inc({ cause: 'unparsable' }, missing);
    try {
      // Every column read (a count alone would not parse them).
      await connection.run(`SELECT max(hash(t)) FROM ${csvSource(this.path(segment.seq, 'csv'), segment.longestLine, true)} AS t`);
      const reasons = (await connection.runAndReadAll('SELECT error_type, count(*), min(line), any_value(error_message) FROM reject_errors GROUP BY error_type ORDER BY 2 DESC')).getRows();
      this.options.logger?.warn(
        {
          segment: segmentName(segment.seq),
          lines: missing,
          written: segment.records,
          reasons: reasons.map(([type, count, line, message]) => ({ type: String(type), count: Number(count), firstLine: Number(line), message: String(message).slice(0, 300) })),
        },
        `flow store: ${missing} index lines of ${segmentName(segment.seq)}.csv could not be read by DuckDB: their records are missing from queries (their bytes stay in ${segmentName(segment.seq)}.recz). This is a bug of the store's CSV writer (apps/exporter/src/store/columns.ts): report it with this line`,
      );
    } finally {
      // The reject tables are the connection's: the next seal's reasons are its own.
      await connection.run('DROP TABLE IF EXISTS reject_errors');
      await connection.run('DROP TABLE IF EXISTS reject_scans');
    }
  }

  /**
   * The index lines of a CSV found at open (a crash or a stop left it): how many and the longest,
   * after removing a last line cut short (a stop while its batch was written: not acked, so
   * JetStream delivers the batch again).
   */
  private async learnIndexLines(segment: Segment): Promise<void> {
    const path = this.path(segment.seq, 'csv');
    const { lines, longestLine, whole, size } = await indexLines(path);
    Object.assign(segment, { records: lines, longestLine });
    if (whole === size) return;
    await truncate(path, whole);
    this.unreadable?.inc({ cause: 'cut_last_line' });
    this.options.logger?.warn(
      { segment: segmentName(segment.seq), bytes: size - whole },
      `flow store: removed the last index line of ${segmentName(segment.seq)}.csv, cut short by a stop while its batch was written; the batch was not acked and is delivered again (nothing to do)`,
    );
  }

  private fileBytes(segment: Segment): number {
    let total = 0;
    for (const ext of allExts) {
      try {
        total += statSync(this.path(segment.seq, ext)).size;
      } catch {
        // not there (sealed segments have no CSV)
      }
    }
    return total;
  }

  /** Drops sealed segments older than the retention, then the oldest while above the size bound. */
  enforceRetention(nowMs = Date.now()): void {
    const cutoff = BigInt(nowMs - this.options.retentionMs) * 1_000_000n;
    const drop = (segment: Segment) => {
      this.removeWhenUnread(allExts.map((ext) => this.path(segment.seq, ext)));
      this.expired += segment.records;
      this.segments.splice(this.segments.indexOf(segment), 1);
    };
    for (const segment of [...this.segments]) if (segment.sealed && segment.maxNs < cutoff && segment.minNs <= segment.maxNs) drop(segment);
    let bytes = this.segments.reduce((sum, s) => sum + this.fileBytes(s), 0);
    while (bytes > this.options.maxBytes) {
      const oldest = this.segments.find((s) => s.sealed);
      if (!oldest) break;
      bytes -= this.fileBytes(oldest);
      drop(oldest);
    }
  }

  stats(): StoreStats {
    const nonEmpty = this.segments.filter((s) => s.minNs <= s.maxNs);
    return {
      records: this.segments.reduce((sum, s) => sum + s.records, 0),
      bytes: this.segments.reduce((sum, s) => sum + this.fileBytes(s), 0),
      oldestNs: nonEmpty.reduce((min, s) => (s.minNs < min ? s.minNs : min), nonEmpty[0]?.minNs ?? 0n),
      newestNs: nonEmpty.reduce((max, s) => (s.maxNs > max ? s.maxNs : max), 0n),
      segments: this.segments.length,
      expiredRecords: this.expired,
      duplicateRecords: this.duplicates,
      pendingSeals: this.pendingSeals,
    };
  }

  /** The FROM source of the segments overlapping [since, until), or undefined when none does. */
  private source(sinceNs: bigint, untilNs: bigint): string | undefined {
    const parts: string[] = [];
    const parquet: string[] = [];
    for (const s of this.segments) {
      if (s.records === 0 || s.maxNs < sinceNs || (untilNs > 0n && s.minNs >= untilNs)) continue;
      if (s.sealed) parquet.push(sqlString(this.path(s.seq, 'parquet')));
      else parts.push(`SELECT * FROM ${csvSource(this.path(s.seq, 'csv'), s.longestLine)}`);
    }
    if (parquet.length > 0) parts.unshift(`SELECT * FROM read_parquet([${parquet.join(', ')}])`);
    if (parts.length === 0) return undefined;
    return `(${parts.join(' UNION ALL ')})`;
  }

  private rangeSql(sinceNs: bigint, untilNs: bigint): string {
    const cutoff = BigInt(Date.now() - this.options.retentionMs) * 1_000_000n;
    const since = sinceNs > cutoff ? sinceNs : cutoff;
    return `time_ns >= ${since}${untilNs > 0n ? ` AND time_ns < ${untilNs}` : ''}`;
  }

  /** The FROM source of one segment. */
  private segmentSource(s: Segment): string {
    return s.sealed ? `read_parquet(${sqlString(this.path(s.seq, 'parquet'))})` : csvSource(this.path(s.seq, 'csv'), s.longestLine);
  }

  /**
   * Raw flows of a range, oldest first. Throws FilterError for a bad filter. With --last N (or a
   * limit) the segments are read newest first (oldest first) and the reading stops as soon as no
   * remaining segment can hold a flow that beats the N collected: a query for the last 100 flows
   * reads the newest segment or two, not the whole range.
   */
  flows(query: FlowQuery): Promise<StoredFlow[]> {
    return this.read(() => this.flowsNow(query));
  }

  private async flowsNow(query: FlowQuery): Promise<StoredFlow[]> {
    const where = compileSql(query.filter);
    const cap = query.last > 0 ? query.last : query.limit;
    const desc = query.last > 0;
    const range = this.rangeSql(query.sinceNs, query.untilNs);
    const overlapping = this.segments.filter((s) => s.records > 0 && s.maxNs >= query.sinceNs && !(query.untilNs > 0n && s.minNs >= query.untilNs));
    const columns = 'seg, off, len, received_ns, time_ns';
    const order = desc ? 'DESC' : 'ASC';
    const orderBy = `ORDER BY time_ns ${order}, seg ${order}, off ${order}`;
    const connection = await this.connect();
    let rows: Row[] = [];
    try {
      if (cap === 0) {
        const from = this.source(query.sinceNs, query.untilNs);
        if (!from) return [];
        rows = (await connection.runAndReadAll(`SELECT ${columns} FROM ${from} WHERE ${range} AND ${where} ${orderBy}`)).getRows() as Row[];
      } else {
        overlapping.sort((a, b) => (desc ? (a.maxNs > b.maxNs ? -1 : a.maxNs < b.maxNs ? 1 : 0) : a.minNs < b.minNs ? -1 : a.minNs > b.minNs ? 1 : 0));
        for (const segment of overlapping) {
          if (rows.length >= cap) {
            // The cap-th flow so far; a segment entirely beyond it cannot contribute.
            const kth = rows[cap - 1]![4];
            if (desc ? segment.maxNs < kth : segment.minNs > kth) break;
          }
          const found = (await connection.runAndReadAll(`SELECT ${columns} FROM ${this.segmentSource(segment)} WHERE ${range} AND ${where} ${orderBy} LIMIT ${cap}`)).getRows() as Row[];
          rows = mergeRows(rows, found, desc).slice(0, cap);
        }
      }
    } finally {
      connection.closeSync();
    }
    if (desc) {
      rows.reverse();
      if (query.limit > 0 && rows.length > query.limit) rows = rows.slice(0, query.limit);
    }
    return this.readRecords(rows.map((r) => [r[0], r[1], r[2], r[3]]));
  }

  private async readRecords(rows: [number, bigint, number, bigint][]): Promise<StoredFlow[]> {
    const files = new Map<number, RecordBytes>();
    try {
      const out: StoredFlow[] = [];
      for (const [seg, off, len, receivedNs] of rows) {
        let file = files.get(seg);
        if (!file) {
          file = await RecordBytes.open(this.path(seg, 'rec'), this.path(seg, 'recz'));
          files.set(seg, file);
        }
        out.push({ record: fromBinary(FlowRecordSchema, await file.read(Number(off), len)), receivedNs });
      }
      return out;
    } finally {
      for (const file of files.values()) await file.close();
    }
  }

  /** The SQL of aggregate() (undefined: no segment in range). Throws FilterError. */
  private aggregateSql(query: AggregateQuery): string | undefined {
    const where = compileSql(query.filter);
    const range = this.rangeSql(query.sinceNs, query.untilNs);
    const cutoff = BigInt(Date.now() - this.options.retentionMs) * 1_000_000n;
    const rollupLevel = (query.level === 'workload' || query.level === 'namespace') && [...filterColumns(query.filter)].every((c) => rollupColumnSet.has(c));
    const inside = (s: Segment) =>
      s.sealed && s.minNs >= query.sinceNs && s.minNs >= cutoff && (query.untilNs === 0n || s.maxNs < query.untilNs) && existsSync(this.path(s.seq, 'rollup.parquet'));
    const overlapping = this.segments.filter((s) => s.records > 0 && s.maxNs >= query.sinceNs && !(query.untilNs > 0n && s.minNs >= query.untilNs));
    const rolled = rollupLevel ? overlapping.filter(inside) : [];
    const raw = overlapping.filter((s) => !rolled.includes(s));
    const src = groupSql(query.level, 'src');
    const dst = groupSql(query.level, 'dst');
    const none = ["''", "''", 'false'];
    const [s, d] = query.side === 'src' ? [src, none] : query.side === 'dst' ? [none, dst] : [src, dst];
    const parts: string[] = [];
    if (raw.length > 0) {
      const sealed = raw.filter((x) => x.sealed).map((x) => sqlString(this.path(x.seq, 'parquet')));
      const sources = [...(sealed.length > 0 ? [`SELECT * FROM read_parquet([${sealed.join(', ')}])`] : []), ...raw.filter((x) => !x.sealed).map((x) => `SELECT * FROM ${csvSource(this.path(x.seq, 'csv'), x.longestLine)}`)];
      parts.push(`SELECT ${s[0]} AS s_ns, ${s[1]} AS s_name, ${s[2]} AS s_ext, ${d[0]} AS d_ns, ${d[1]} AS d_name, ${d[2]} AS d_ext, ${sumsSql}
        FROM (${sources.join(' UNION ALL ')}) WHERE ${range} AND ${aggregatedRowsSql} AND ${where} GROUP BY ALL`);
    }
    if (rolled.length > 0) {
      // Rollup rows are at the workload level; the namespace level and one side regroup them.
      const keep = (side: 'src' | 'dst', prefix: 's' | 'd') =>
        query.side !== 'pair' && query.side !== side ? "'' AS X_ns, '' AS X_name, false AS X_ext".replaceAll('X', prefix) : `${prefix}_ns, ${query.level === 'namespace' ? "''" : `${prefix}_name`} AS ${prefix}_name, ${prefix}_ext`;
      parts.push(`SELECT ${keep('src', 's')}, ${keep('dst', 'd')}, bytes, reverse_bytes, packets, reverse_packets, retransmits, rtt_sum, rtt_n, rtt_max, records, dropped_packets, dropped_bytes
        FROM read_parquet([${rolled.map((x) => sqlString(this.path(x.seq, 'rollup.parquet'))).join(', ')}]) WHERE ${where}`);
    }
    if (parts.length === 0) return undefined;
    return `SELECT * FROM (SELECT s_ns, s_name, s_ext, d_ns, d_name, d_ext, sum(bytes)::UBIGINT AS bytes, sum(reverse_bytes)::UBIGINT AS reverse_bytes, sum(packets)::UBIGINT AS packets,
        sum(reverse_packets)::UBIGINT AS reverse_packets, sum(retransmits)::UBIGINT AS retransmits,
        coalesce(round(sum(rtt_sum) / nullif(sum(rtt_n), 0)), 0)::UINTEGER AS rtt_avg_us, coalesce(max(rtt_max), 0)::UINTEGER AS rtt_max_us, sum(records)::UBIGINT AS records,
        sum(dropped_packets)::UBIGINT AS dropped_packets, sum(dropped_bytes)::UBIGINT AS dropped_bytes,
        coalesce(sum(rtt_sum), 0)::UBIGINT AS rtt_sum_us, coalesce(sum(rtt_n), 0)::UBIGINT AS rtt_records
      FROM (${parts.join(' UNION ALL ')}) GROUP BY ALL)
      ORDER BY ${metricOrder[query.orderBy]} DESC, s_ns, s_name, d_ns, d_name${query.limit > 0 ? ` LIMIT ${query.limit}` : ''}`;
  }

  /**
   * Sums per group pair (or per group of one side) over a range. Throws FilterError. A
   * namespace or workload map, unfiltered or filtered only on the rollups' filter columns, takes
   * the sealed segments wholly inside its range from their rollups (exact: the same sums,
   * precomputed) and reads raw rows only for the rest.
   */
  aggregate(query: AggregateQuery): Promise<AggregateRow[]> {
    return this.read(() => this.aggregateNow(query));
  }

  private async aggregateNow(query: AggregateQuery): Promise<AggregateRow[]> {
    const sql = this.aggregateSql(query);
    if (sql === undefined) return [];
    const connection = await this.connect();
    try {
      const rows = (await connection.runAndReadAll(sql)).getRows();
      return rows.map((r) => ({
        src: { namespace: r[0] as string, name: r[1] as string, external: r[2] as boolean },
        dst: { namespace: r[3] as string, name: r[4] as string, external: r[5] as boolean },
        bytes: r[6] as bigint,
        reverseBytes: r[7] as bigint,
        packets: r[8] as bigint,
        reversePackets: r[9] as bigint,
        retransmits: r[10] as bigint,
        rttAvgUs: r[11] as number,
        rttMaxUs: r[12] as number,
        records: r[13] as bigint,
        droppedPackets: r[14] as bigint,
        droppedBytes: r[15] as bigint,
        rttSumUs: r[16] as bigint,
        rttRecords: r[17] as bigint,
      }));
    } finally {
      connection.closeSync();
    }
  }

  /** DuckDB's EXPLAIN ANALYZE of an aggregate: where its time goes, per operator (benchmarks). */
  explainAggregate(query: AggregateQuery): Promise<string> {
    return this.read(async () => {
      const sql = this.aggregateSql(query);
      if (sql === undefined) return '(no segment in range)';
      const connection = await this.connect();
      try {
        const rows = (await connection.runAndReadAll(`EXPLAIN ANALYZE ${sql}`)).getRows();
        return rows.map((r) => String(r[1])).join('\n');
      } finally {
        connection.closeSync();
      }
    });
  }

  /** Finishes pending appends and seals; the hot segment stays as CSV and is sealed at the next open. */
  async close(): Promise<void> {
    await this.queue;
    await this.sealing;
    this.closed = true;
    await this.recFile?.close();
    await this.csvFile?.close();
    this.instance?.closeSync();
    this.instance = undefined;
  }
}

/** seg, off, len, received_ns, time_ns */
type Row = [number, bigint, number, bigint, bigint];

/** Two row lists each sorted by (time, seg, off), ascending or descending, merged the same way. */
function mergeRows(a: Row[], b: Row[], desc: boolean): Row[] {
  const cmp = (x: Row, y: Row) => {
    const c = x[4] < y[4] ? -1 : x[4] > y[4] ? 1 : x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
    return desc ? -c : c;
  };
  return [...a, ...b].sort(cmp);
}

/** DuckDB's default max_line_size (its buffer_size is 16 times it). */
const DUCKDB_MAX_LINE = 2_000_000;

/**
 * DuckDB's read_csv of a hot segment's index. `\N` is the null string (so an empty field is ''),
 * and a quoted `"\N"` is text (allow_quoted_nulls off): csvText quotes a value that is `\N`.
 * A segment with a line longer than DuckDB's default max_line_size gets a larger one (a power of
 * two, with a buffer four times it: sizes DuckDB was seen to lose lines with were odd ones).
 * Queries skip a line DuckDB cannot read rather than fail; a seal counts it (`storeRejects`:
 * DuckDB's reasons, for the warning).
 */
export function csvSource(path: string, longestLine = 0, storeRejects = false): string {
  let size = '';
  if (longestLine >= DUCKDB_MAX_LINE) {
    let max = 4 * 1024 * 1024;
    while (max <= longestLine) max *= 2;
    size = `, max_line_size = ${max}, buffer_size = ${4 * max}`;
  }
  const rejects = storeRejects ? ', store_rejects = true' : '';
  return `read_csv(${sqlString(path)}, header = false, auto_detect = false, delim = ',', quote = '"', escape = '"', nullstr = '\\N', allow_quoted_nulls = false, ignore_errors = true${rejects}${size}, columns = ${csvColumnsSql})`;
}

/**
 * The index lines of a file (a line ends at a newline outside quotes: a quoted value may hold
 * line breaks) and the longest, newline included; `whole` bytes end with the last whole line.
 */
async function indexLines(path: string): Promise<{ lines: number; longestLine: number; whole: number; size: number }> {
  const handle = await open(path, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1024 * 1024);
    let at = 0;
    let lines = 0;
    let longestLine = 0;
    let lineStart = 0;
    let quoted = false;
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, at);
      if (bytesRead === 0) break;
      for (let i = 0; i < bytesRead; i++) {
        const b = chunk[i]!;
        // A doubled quote inside a quoted value turns quoting off and on again.
        if (b === QUOTE) quoted = !quoted;
        else if (b === NEWLINE && !quoted) {
          const end = at + i + 1;
          if (end - lineStart > longestLine) longestLine = end - lineStart;
          lineStart = end;
          lines++;
        }
      }
      at += bytesRead;
    }
    return { lines, longestLine, whole: lineStart, size: at };
  } finally {
    await handle.close();
  }
}

/** A counter by cause, or the one a store of the same registry made before (a folder opened again). */
function causeCounter(registry: Registry | undefined, name: string, help: string): Counter<'cause'> | undefined {
  if (!registry) return undefined;
  return (registry.getSingleMetric(name) as Counter<'cause'> | undefined) ?? new Counter({ name, help, labelNames: ['cause'], registers: [registry] });
}

/** The rows of a Parquet file, or undefined when DuckDB cannot read it (empty, cut short). */
async function parquetRows(connection: DuckDBConnection, path: string): Promise<number | undefined> {
  try {
    return Number((await connection.runAndReadAll(`SELECT count(*) FROM read_parquet(${sqlString(path)})`)).getRows()[0]![0]);
  } catch {
    return undefined;
  }
}
