// Public API of @kappa/config: typed options from flags, KAPPA_* variables and a JSON file.
export {
  ConfigError,
  boolean,
  duration,
  integer,
  list,
  oneOf,
  parseDurationMs,
  regex,
  string,
  url,
} from './options.js';
export type { Option } from './options.js';
export { envName, flagName, parseConfig, renderHelp } from './parse.js';
export type { ConfigOf, ConfigSources, OptionTable } from './parse.js';
export { knownSecrets, redactSecrets, registerSecret, registerUrlSecret } from './secrets.js';
export { loadConfigOrExit } from './service.js';
export type { CommandSpec } from './service.js';
