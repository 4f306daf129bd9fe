// Public API of @kappa/filter: the flow field table, the filter language (parse, compile to a
// record predicate or to SQL over the flow store) and the hubble-style flags that compile into it.
export { eitherEndFields, fields, fieldsByName, ipHex, labelsText, protocolNames, vantageNames } from './fields.js';
export type { ColumnType, FieldDef, FieldType } from './fields.js';
export { FilterError, fieldNames, parseFilter } from './parse.js';
export type { FilterNode, Operator, Value } from './parse.js';
export { andFilters, compilePredicate, compileSql, filterColumns, sqlString } from './compile.js';
export type { FlowPredicate } from './compile.js';
export { FlagValueError, flagsToFilter, quoteValue, selectionFlags } from './flags.js';
export type { SelectionFlag } from './flags.js';
