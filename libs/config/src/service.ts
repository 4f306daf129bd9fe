// The start of every kappa command: --help, config parsing, and one clear line on a bad value.
import { ConfigError } from './options.js';
import { parseConfig, renderHelp } from './parse.js';
import type { ConfigOf, OptionTable } from './parse.js';

export interface CommandSpec<T extends OptionTable> {
  /** The command's name as users type it, e.g. kappa-capture. */
  command: string;
  summary: string;
  options: T;
  required?: readonly (keyof T & string)[];
}

/**
 * Parses process.argv and the environment for a command. Prints --help and exits 0, or prints
 * one line naming the bad flag and exits 2. Returns the typed config otherwise.
 */
export function loadConfigOrExit<T extends OptionTable>(
  spec: CommandSpec<T>,
  argv: readonly string[] = process.argv.slice(2),
  env: Readonly<Record<string, string | undefined>> = process.env,
): ConfigOf<T> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${renderHelp(spec.command, spec.summary, spec.options)}\n`);
    process.exit(0);
  }
  try {
    return parseConfig(spec.options, { argv, env }, spec.required ?? []);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${spec.command}: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
}
