// Lint rules for the whole workspace: typescript-eslint with type information, Nx module
// boundaries (apps use libs, libs never use apps, only through a library's index), and no import
// cycles between modules (import/no-cycle, resolving TypeScript's .js specifiers to .ts files).
import nx from '@nx/eslint-plugin';
import importPlugin from 'eslint-plugin-import';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/src/gen/**', '**/vitest.config.ts', '**/*.mjs', '**/bin/*.js'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { '@nx': nx, import: importPlugin },
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    settings: {
      'import/resolver': { typescript: { noWarnOnMultipleProjects: true, project: ['tsconfig.base.json', 'apps/*/tsconfig.json', 'libs/*/tsconfig.json', 'tests/*/tsconfig.json', 'infra/tsconfig.json', 'tools/bench/tsconfig.json'] } },
      'import/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      'import/no-cycle': ['error', { ignoreExternal: true }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['@kappa/*/src/*', '@kappa/*/src', '../../libs/*', '../../../libs/*', '../../apps/*'], message: "Import a library through its index: '@kappa/<name>'." }] },
      ],
      '@nx/enforce-module-boundaries': [
        'error',
        {
          allow: [],
          depConstraints: [
            { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:e2e', onlyDependOnLibsWithTags: ['type:lib', 'type:app'] },
            { sourceTag: 'type:infra', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:tool', onlyDependOnLibsWithTags: ['type:lib'] },
          ],
        },
      ],
    },
  },
  {
    // Benchmarks measure the apps' own code in process (a stage's transform, a sink, the joiner's
    // store), so they import app modules by path; nothing imports a benchmark.
    files: ['tools/bench/**/*.ts'],
    rules: { 'no-restricted-imports': 'off', '@nx/enforce-module-boundaries': 'off' },
  },
  {
    files: ['**/test/**/*.ts', '**/*.test.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
