// Types of report.mjs (plain JavaScript, also run by run.mjs without a TypeScript loader).
export declare const repoRoot: string;
export declare const benchmarksFile: string;
/** One line naming the machine, kernel, Node and the load average, for a figure's context. */
export declare function machineLine(): string;
/** A Markdown table. */
export declare function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string;
/** Replaces (or appends) the BENCHMARKS.md section of this benchmark. */
export declare function writeSection(name: string, markdown: string): void;
/** CPU seconds (user + system) a process has used. */
export declare function cpuSeconds(pid: number): number;
/** Resident set size of a process, in bytes. */
export declare function rssBytes(pid: number): number;
